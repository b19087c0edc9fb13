package fakeai

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error types used by the real API.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

// errorBody is the OpenAI error envelope.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// fail answers with an OpenAI error; code and param "" become null.
func (c *call) fail(status int, typ, code, param, msg string) {
	c.s.errs.Add(1)
	c.writeJSON(status, errorBody{Error: apiError{Message: msg, Type: typ, Param: optional(param), Code: optional(code)}})
}

// invalid answers 400 invalid_request_error.
func (c *call) invalid(param, code, msg string) {
	c.fail(http.StatusBadRequest, typeInvalidRequest, code, param, msg)
}

func (c *call) missingModel() {
	c.invalid("", "", "you must provide a model parameter")
}

func (c *call) missingParam(param string) {
	c.invalid(param, "missing_required_parameter", "Missing required parameter: '"+param+"'.")
}

func (c *call) belowMin(param string, got, minimum int) {
	c.invalid(param, "integer_below_min_value", fmt.Sprintf(
		"Invalid '%s': integer below minimum value. Expected a value >= %d, but got %d instead.", param, minimum, got))
}

func (c *call) aboveMax(param string, got, maximum int) {
	c.invalid(param, "integer_above_max_value", fmt.Sprintf(
		"Invalid '%s': integer above maximum value. Expected a value <= %d, but got %d instead.", param, maximum, got))
}

const badJSONMessage = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your " +
	"HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have " +
	"trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"

// decode parses the JSON body into v, answering 400 on failure.
func (c *call) decode(v any) bool {
	err := json.Unmarshal(c.body, v)
	if err == nil {
		return true
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		c.invalid(te.Field, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.",
			te.Field, jsonKind(te.Type.Kind().String()), withArticle(te.Value)))
		return false
	}
	c.invalid("", "", badJSONMessage)
	return false
}

// withArticle prefixes a JSON type name with "a" or "an".
func withArticle(v string) string {
	if v != "" && strings.ContainsRune("aeiou", rune(v[0])) {
		return "an " + v
	}
	return "a " + v
}

// jsonKind names a Go kind the way the API names JSON types.
func jsonKind(k string) string {
	switch {
	case k == "bool":
		return "a boolean"
	case k == "string":
		return "a string"
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"):
		return "an integer"
	case strings.HasPrefix(k, "float"):
		return "a decimal"
	case k == "slice", k == "array":
		return "an array"
	default:
		return "an object"
	}
}

func (c *call) unknownURL() {
	c.fail(http.StatusNotFound, typeInvalidRequest, "unknown_url", "", "Unknown request URL: "+c.r.Method+" "+
		c.r.URL.Path+". Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.")
}

// authorize checks the bearer key, answering 401 when it is wrong.
func (c *call) authorize() bool {
	want := c.s.cfg.APIKey
	if want == "" {
		return true
	}
	auth := c.r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(auth, "Bearer ")
	if ok && key == want {
		return true
	}
	if !ok || key == "" {
		c.fail(http.StatusUnauthorized, typeInvalidRequest, "", "", "You didn't provide an API key. You need to "+
			"provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "+
			"or as the password field (with blank username) if you're accessing the API from your browser and are "+
			"prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.")
		return false
	}
	c.fail(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "", "Incorrect API key provided: "+
		maskKey(key)+". You can find your API key at https://platform.openai.com/account/api-keys.")
	return false
}

// maskKey shows only the ends of a key, like the real API.
func maskKey(k string) string {
	if len(k) <= 8 {
		return strings.Repeat("*", len(k))
	}
	return k[:3] + strings.Repeat("*", len(k)-7) + k[len(k)-4:]
}

// Default retry hints on injected 429 and 503 answers.
const (
	defaultRetryAfter   = "2"
	defaultRetryAfterMs = 1500
	// faultRPM is the requests limit reported on an injected 429 when
	// Config.RPM is 0.
	faultRPM = 500
)

// injected answers an X-Fake-Status / SetFault error.
func (c *call) injected(status int) {
	h := c.w.Header()
	retry := func() {
		if ms := c.opts.retryAfterMs; ms >= 0 {
			h["Retry-After"] = []string{strconv.Itoa((ms + 999) / 1000)}
			h["Retry-After-Ms"] = []string{strconv.Itoa(ms)}
		} else {
			h["Retry-After"] = []string{defaultRetryAfter}
			h["Retry-After-Ms"] = []string{strconv.Itoa(defaultRetryAfterMs)}
		}
	}
	typ, code, msg := typeInvalidRequest, "", ""
	switch {
	case status == http.StatusTooManyRequests:
		retry()
		ms := c.opts.retryAfterMs
		if ms < 0 {
			ms = defaultRetryAfterMs
		}
		wait := time.Duration(ms) * time.Millisecond
		if c.s.limits != nil {
			c.rl = c.s.limits.peek(time.Now())
		}
		c.rl.set = true
		if c.rl.reqLimit == 0 {
			c.rl.reqLimit = faultRPM
		}
		c.rl.reqRemaining, c.rl.reqReset = 0, wait
		c.rl.setHeaders(h)
		c.s.errs.Add(1)
		c.writeJSON(status, errorBody{Error: apiError{
			Message: fmt.Sprintf("Rate limit reached for requests in organization org-fakeai on requests per min (RPM): "+
				"Limit %d, Used %d, Requested 1. Please try again in %s. Visit "+
				"https://platform.openai.com/account/rate-limits to learn more.", c.rl.reqLimit, c.rl.reqLimit, formatReset(wait)),
			Type: "requests",
			Code: optional("rate_limit_exceeded"),
		}})
		return
	case status == http.StatusBadRequest:
		msg = "fakeai: injected bad request."
	case status == http.StatusUnauthorized:
		code, msg = "invalid_api_key", "Incorrect API key provided: sk-fak*******ault. You can find your API key at https://platform.openai.com/account/api-keys."
	case status == http.StatusForbidden:
		code, msg = "unsupported_country_region_territory", "Country, region, or territory not supported"
	case status == http.StatusNotFound:
		code, msg = "model_not_found", "The model does not exist or you do not have access to it."
	case status == http.StatusInternalServerError:
		typ, msg = typeServer, "The server had an error while processing your request. Sorry about that!"
	case status == http.StatusBadGateway:
		typ, msg = typeServer, "Bad gateway."
	case status == http.StatusServiceUnavailable:
		retry()
		typ, msg = typeServer, "The server is overloaded or not ready yet."
	case status == http.StatusGatewayTimeout:
		typ, msg = typeServer, "Gateway timeout."
	case status >= 500:
		typ, msg = typeServer, "The server had an error while processing your request. Sorry about that!"
	default:
		msg = "fakeai: injected status " + strconv.Itoa(status) + "."
	}
	c.fail(status, typ, code, "", msg)
}

// rateLimited answers a 429 caused by Config.RPM or Config.TPM.
func (c *call) rateLimited(v verdict, model string) {
	c.s.rateLimited.Add(1)
	h := c.w.Header()
	ms := int64(math.Ceil(float64(v.wait) / float64(time.Millisecond)))
	h["Retry-After"] = []string{strconv.FormatInt((ms+999)/1000, 10)}
	h["Retry-After-Ms"] = []string{strconv.FormatInt(ms, 10)}
	if model == "" {
		model = "requests"
	}
	var msg string
	switch {
	case v.tooLarge:
		msg = fmt.Sprintf("Request too large for %s in organization org-fakeai on tokens per min (TPM): Limit %d, "+
			"Requested %d. The input or output tokens must be reduced in order to run successfully. Visit "+
			"https://platform.openai.com/account/rate-limits to learn more.", model, v.limit, v.requested)
	case v.kind == "tokens":
		msg = fmt.Sprintf("Rate limit reached for %s in organization org-fakeai on tokens per min (TPM): Limit %d, "+
			"Used %d, Requested %d. Please try again in %s. Visit https://platform.openai.com/account/rate-limits "+
			"to learn more.", model, v.limit, v.used, v.requested, formatReset(v.wait))
	default:
		msg = fmt.Sprintf("Rate limit reached for %s in organization org-fakeai on requests per min (RPM): Limit %d, "+
			"Used %d, Requested %d. Please try again in %s. Visit https://platform.openai.com/account/rate-limits "+
			"to learn more.", model, v.limit, v.used, v.requested, formatReset(v.wait))
	}
	c.writeJSON(http.StatusTooManyRequests, errorBody{Error: apiError{
		Message: msg, Type: v.kind, Code: optional("rate_limit_exceeded"),
	}})
}
