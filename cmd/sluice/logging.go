package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Log defaults: JSON lines at level info.
const (
	defaultLogFormat = "json"
	defaultLogLevel  = "info"
)

// envOr returns the environment variable name, or def when it is unset or
// empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// newLogger builds the process logger: format "json" (one JSON object per
// line, the default) or "text" (slog's key=value lines); level "debug",
// "info", "warn" or "error".
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: humanDuration}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("-log-format %q: want json or text", format)
	}
}

// humanDuration writes every time.Duration attribute as a Go duration string
// ("1.5s", "250ms") instead of slog's default, raw nanoseconds in JSON.
func humanDuration(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
