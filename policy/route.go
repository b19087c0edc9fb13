package policy

import (
	"fmt"
	"strings"
)

// RouteRule sends the models that match Pattern to Upstream.
type RouteRule struct {
	// Pattern is an exact model name, a prefix ending in "*" or the
	// catch-all "*".
	Pattern string
	// Upstream is the index of the upstream the proxy holds for this rule.
	Upstream int
	// Deployment is the Azure deployment name; "" means the model name.
	Deployment string
	// Fallbacks are upstream indexes tried in order when Upstream cannot
	// serve.
	Fallbacks []int
	// group is Pattern as written in the configuration, set by NewRouter.
	group string
}

// Route is where one model goes.
type Route struct {
	// Upstream is the index of the chosen upstream.
	Upstream int
	// Model is the model name to send upstream (the alias target when the
	// request named an alias, else the requested model).
	Model string
	// Deployment is the Azure deployment; "" for other upstreams.
	Deployment string
	// Rewritten reports that Model differs from the requested name, so the
	// request body must be rewritten.
	Rewritten bool
	// Fallbacks are the upstreams to try when Upstream cannot serve.
	Fallbacks []int
	// Group is the pattern of the rule that matched, as written in
	// sluice.yaml's routes ("gpt-4o*", "*"): the model group of metrics,
	// bounded by the configuration whatever the client asks for.
	Group string
}

// Router resolves model names to upstreams. Rules are tried in order: exact
// names first, then wildcards by their order in the file, then the
// catch-all. A Router is immutable and safe for concurrent use.
type Router struct {
	exact    map[string]RouteRule
	prefixes []RouteRule // Pattern holds the prefix without "*"
	catchAll *RouteRule
	first    int // upstream of the first rule, for Default
	aliases  map[string]string
}

// NewRouter compiles rules and aliases (alias → model). An alias target is
// routed like any other model name.
func NewRouter(rules []RouteRule, aliases map[string]string) (*Router, error) {
	r := &Router{exact: make(map[string]RouteRule), aliases: aliases}
	if len(rules) > 0 {
		r.first = rules[0].Upstream
	}
	for _, rule := range rules {
		rule.group = rule.Pattern
		switch {
		case rule.Pattern == "*":
			if r.catchAll == nil {
				rr := rule
				r.catchAll = &rr
			}
		case strings.HasSuffix(rule.Pattern, "*"):
			p := rule
			p.Pattern = strings.TrimSuffix(rule.Pattern, "*")
			if strings.Contains(p.Pattern, "*") {
				return nil, fmt.Errorf("route %q: a wildcard may only end the pattern", rule.Pattern)
			}
			r.prefixes = append(r.prefixes, p)
		case rule.Pattern == "":
			return nil, fmt.Errorf("route with an empty model pattern")
		default:
			if _, dup := r.exact[rule.Pattern]; !dup {
				r.exact[rule.Pattern] = rule
			}
		}
	}
	return r, nil
}

// Resolve finds the route of model. ok is false when no rule matches.
func (r *Router) Resolve(model string) (route Route, ok bool) {
	target := model
	if t, isAlias := r.aliases[model]; isAlias {
		target = t
	}
	rule, ok := r.match(target)
	if !ok {
		return Route{}, false
	}
	return Route{Upstream: rule.Upstream, Model: target, Deployment: rule.Deployment, Rewritten: target != model,
		Fallbacks: rule.Fallbacks, Group: rule.group}, true
}

// Default is the route for requests that name no model (GET /v1/models,
// file uploads): the catch-all's upstream, else the first rule's, else 0.
func (r *Router) Default() int {
	if r.catchAll != nil {
		return r.catchAll.Upstream
	}
	if len(r.prefixes) > 0 {
		return r.prefixes[0].Upstream
	}
	for _, rule := range r.exact {
		return rule.Upstream
	}
	return 0
}

func (r *Router) match(model string) (RouteRule, bool) {
	if rule, ok := r.exact[model]; ok {
		return rule, true
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(model, p.Pattern) {
			return p, true
		}
	}
	if r.catchAll != nil {
		return *r.catchAll, true
	}
	return RouteRule{}, false
}
