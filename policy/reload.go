package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Load reads and compiles a policies.yaml file and returns the policy with
// the SHA-256 of the bytes it was compiled from. It is the one code path of
// `sluice validate`, the first load and every reload.
func Load(path string, lookupEnv func(string) (string, bool)) (*Policy, [sha256.Size]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("cannot read policies %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	p, err := Parse(path, data, lookupEnv)
	return p, sum, err
}

// maxLoggedChanges bounds the changes a reload logs one per line.
const maxLoggedChanges = 50

// Reload results, the values of sluice_policy_reloads_total's result label.
const (
	ReloadSuccess   = "success"
	ReloadFailure   = "failure"
	ReloadUnchanged = "unchanged"
	// ReloadRefused: the new policy compiled but would lift limits (Lifts)
	// and the reload was not forced; the policy in force stays.
	ReloadRefused = "refused"
	// ReloadForced: a forced reload applied a policy that lifts limits.
	ReloadForced = "forced"
)

// LiftsError is a reload refused because the new policy would lift limits;
// Lifts lists them. Force the reload (POST /admin/reload?force=1) or
// restart to apply such a policy.
type LiftsError struct {
	// Path is the policies file.
	Path string
	// Lifts are the limits the new policy would lift (see Lifts).
	Lifts []string
}

func (e *LiftsError) Error() string {
	first := e.Lifts[0]
	more := ""
	if len(e.Lifts) > 1 {
		more = fmt.Sprintf(" and %d more", len(e.Lifts)-1)
	}
	return fmt.Sprintf("%s: reload refused: the new policy lifts limits (%s%s); a file cut short still parses. "+
		"If that is meant, reload with force (POST /admin/reload?force=1) or restart", e.Path, first, more)
}

// settleDelay is how long the file's identity must hold still before a
// SIGHUP or admin reload reads it, and settleTries how often it is looked at
// before such a reload gives up on a file that keeps changing.
const (
	settleDelay = 100 * time.Millisecond
	settleTries = 20
)

// ReloaderOptions configure a Reloader.
type ReloaderOptions struct {
	// Path is the policies.yaml to watch and reload. Required.
	Path string
	// Apply receives every newly compiled policy (the server's atomic
	// swap). Required.
	Apply func(*Policy)
	// Interval is how often the file's identity is polled; 0 disables
	// watching (SIGHUP and the admin call still reload). Default 0.
	Interval time.Duration
	// Registry receives the reload metrics. Required.
	Registry prometheus.Registerer
	// Logger receives one line per reload. Default slog.Default().
	Logger *slog.Logger
	// LookupEnv resolves key_env and ${VAR}; nil: the process environment.
	LookupEnv func(string) (string, bool)
}

// Reloader reloads policies.yaml all or nothing: the file is read, parsed,
// validated and compiled, and only a policy that compiled whole is applied,
// in one call to Apply. Bytes equal to the last good policy's are skipped.
// On an error the last good policy stays in force.
//
// Watching polls the file's identity (os.Stat, which follows symlinks:
// device, inode, size and modification time) every Interval. Polling sees an
// editor's write-to-temp-then-rename, an in-place write and the Kubernetes
// ConfigMap swap of the "..data" symlink alike, on every platform, for one
// stat call per interval; the identity only decides when to read the file,
// the bytes' hash decides whether anything changed. A changed identity must
// hold for one more poll before the file is read, so a reload follows an
// edit within two intervals and never reads a write still in progress.
type Reloader struct {
	o ReloaderOptions

	// mu serialises reloads and guards the fields below.
	mu       sync.Mutex
	sum      [sha256.Size]byte // hash of the bytes of the policy in force
	current  *Policy
	lastErr  error
	lastOK   time.Time
	lastStat os.FileInfo
	// history are the last loads, swaps and failed reloads, oldest first,
	// at most historyLen.
	history []ReloadEvent

	reloads   *prometheus.CounterVec
	insecure  *prometheus.GaugeVec
	ok        prometheus.Gauge
	okTime    prometheus.Gauge
	stop      chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup
	startOnce sync.Once
}

// NewReloader registers the reload metrics. Call Load before Start.
func NewReloader(o ReloaderOptions) (*Reloader, error) {
	if o.Path == "" || o.Apply == nil || o.Registry == nil {
		return nil, errors.New("policy: Reloader needs Path, Apply and Registry")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r := &Reloader{o: o, stop: make(chan struct{})}
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_policy_reloads_total",
		Help: "Reloads of policies.yaml by result: success (a new policy applied), failure (the last good policy stays), unchanged (same bytes, skipped), refused (the new policy would lift limits; the last good policy stays), forced (a forced reload lifted limits)."},
		[]string{"result"})
	r.ok = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_policy_last_reload_successful",
		Help: "1 when the last reload of policies.yaml succeeded (or was unchanged), 0 when it failed and the last good policy is in force."})
	r.okTime = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_policy_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful load of policies.yaml."})
	r.insecure = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_policy_insecure",
		Help: "1 when the policy file in force has the reason's problem (world_writable, plaintext_key), checked at load and at every reload; the log names the file and key ids."},
		[]string{"reason"})
	for _, c := range []prometheus.Collector{r.reloads, r.insecure, r.ok, r.okTime} {
		if err := o.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	for _, res := range []string{ReloadSuccess, ReloadFailure, ReloadUnchanged, ReloadRefused, ReloadForced} {
		r.reloads.WithLabelValues(res)
	}
	for _, reason := range InsecureReasons {
		r.insecure.WithLabelValues(reason)
	}
	return r, nil
}

// Load compiles the file for the first time and returns the policy; it does
// not call Apply (the caller builds the server with it).
func (r *Reloader) Load() (*Policy, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, _ := os.Stat(r.o.Path)
	p, sum, err := Load(r.o.Path, r.o.LookupEnv)
	if err != nil {
		return nil, err
	}
	r.lastStat, r.sum, r.current = fi, sum, p
	r.succeeded()
	r.record(ReloadEvent{Trigger: "start", Result: "loaded", SHA256: fmt.Sprintf("%x", sum)})
	warnUnmatched(r.o.Logger, p)
	r.checkFile(p)
	return p, nil
}

// warnUnmatched logs the users entries that apply to nobody: no personal
// key has that user, and users entries do not reach a trusted key's end
// users (they belong in the key's end_users).
func warnUnmatched(log *slog.Logger, p *Policy) {
	if len(p.UnmatchedUsers) > 0 {
		log.Warn("users entries match no key's own user and so apply to nobody; overrides for a trusted key's end users go in that key's end_users",
			"users", p.UnmatchedUsers)
	}
}

// Policy returns the policy in force.
func (r *Reloader) Policy() *Policy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// Status is what the last reload did.
type Status struct {
	// LastSuccess is when a policy was last loaded or found unchanged.
	LastSuccess time.Time `json:"last_success"`
	// LastError is the last reload's error, "" when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// SHA256 is the hex hash of the bytes of the policy in force.
	SHA256 string `json:"sha256"`
	// History are the last loads, swaps and failed or refused reloads,
	// newest first (unchanged reloads are left out), at most 20.
	History []ReloadEvent `json:"history"`
}

// historyLen bounds Status.History; maxEventChanges the change lines kept
// per event (sluice diff lists them all).
const (
	historyLen      = 20
	maxEventChanges = 200
)

// ReloadEvent is one load of policies.yaml that applied a policy or failed.
type ReloadEvent struct {
	// At is when it happened; Trigger what started it ("start", "watch",
	// "sighup", "admin").
	At      time.Time `json:"at"`
	Trigger string    `json:"trigger"`
	// Result is "loaded" (at start), or a sluice_policy_reloads_total
	// result: success, forced, failure or refused.
	Result string `json:"result"`
	// SHA256 is the hex hash of the policy applied ("" when none was).
	SHA256 string `json:"sha256,omitempty"`
	// Error is why nothing was applied.
	Error string `json:"error,omitempty"`
	// Changes are the effective changes from the policy before (Diff), at
	// most 200; MoreChanges counts the lines left out.
	Changes     []string `json:"changes,omitempty"`
	MoreChanges int      `json:"more_changes,omitempty"`
}

// record keeps e (stamped now) in the history. r.mu is held.
func (r *Reloader) record(e ReloadEvent) {
	e.At = time.Now()
	if n := len(e.Changes); n > maxEventChanges {
		e.Changes, e.MoreChanges = e.Changes[:maxEventChanges:maxEventChanges], n-maxEventChanges
	}
	if len(r.history) == historyLen {
		r.history = slices.Delete(r.history, 0, 1)
	}
	r.history = append(r.history, e)
}

// Status returns the outcome of the last reload.
func (r *Reloader) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{LastSuccess: r.lastOK, SHA256: fmt.Sprintf("%x", r.sum)}
	if r.lastErr != nil {
		s.LastError = r.lastErr.Error()
	}
	s.History = make([]ReloadEvent, len(r.history))
	for i, e := range r.history {
		s.History[len(r.history)-1-i] = e
	}
	return s
}

// Reload reads the file again and applies it when its bytes changed, it
// compiles and it lifts no limit (Lifts; a *LiftsError otherwise). It
// reports whether a new policy was applied; on an error the policy in force
// stays. trigger ("watch", "sighup", "admin") is logged.
func (r *Reloader) Reload(trigger string) (bool, error) { return r.ReloadWith(trigger, false) }

// ReloadWith is Reload; force applies a policy that lifts limits too (each
// lift logged at WARN and counted as result "forced").
//
// A reload not started by the watch (SIGHUP, the admin call) first waits
// until the file's identity holds still for settleDelay, the guard the
// watch applies between two polls, so neither reads a write in progress.
func (r *Reloader) ReloadWith(trigger string, force bool) (bool, error) {
	if trigger != "watch" {
		if err := r.settle(); err != nil {
			r.mu.Lock()
			defer r.mu.Unlock()
			return false, r.failed(trigger, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if fi, err := os.Stat(r.o.Path); err == nil {
		r.lastStat = fi
	}
	data, err := os.ReadFile(r.o.Path)
	var p *Policy
	var sum [sha256.Size]byte
	if err != nil {
		err = fmt.Errorf("cannot read policies %s: %w", r.o.Path, err)
	} else if sum = sha256.Sum256(data); sum != r.sum {
		p, err = Parse(r.o.Path, data, r.o.LookupEnv)
	}
	var lifts []string
	if err == nil && p != nil {
		lifts = Lifts(r.current, p)
		if len(lifts) > 0 && !force {
			for _, l := range lifts {
				r.o.Logger.Warn("policy reload would lift a limit", "file", r.o.Path, "trigger", trigger, "lift", l)
			}
			err = &LiftsError{Path: r.o.Path, Lifts: lifts}
		}
	}
	switch {
	case err != nil:
		return false, r.failed(trigger, err)
	case p == nil:
		r.reloads.WithLabelValues(ReloadUnchanged).Inc()
		r.lastErr = nil
		r.succeeded()
		r.o.Logger.Debug("policy unchanged", "file", r.o.Path, "trigger", trigger)
		r.checkFile(r.current) // a chmod changes no byte
		return false, nil
	}
	changes := Diff(r.current, p)
	r.o.Apply(p)
	r.sum, r.current, r.lastErr = sum, p, nil
	if len(lifts) > 0 {
		r.reloads.WithLabelValues(ReloadForced).Inc()
		for _, l := range lifts {
			r.o.Logger.Warn("forced policy reload lifted a limit", "file", r.o.Path, "trigger", trigger, "lift", l)
		}
	}
	r.reloads.WithLabelValues(ReloadSuccess).Inc()
	r.succeeded()
	result := ReloadSuccess
	if len(lifts) > 0 {
		result = ReloadForced
	}
	r.record(ReloadEvent{Trigger: trigger, Result: result, SHA256: fmt.Sprintf("%x", sum), Changes: changes})
	r.o.Logger.Info("policy reloaded", "file", r.o.Path, "trigger", trigger, "sha256", fmt.Sprintf("%.12x", sum),
		"tiers", len(p.Tiers), "keys", len(p.keys), "changes", len(changes))
	for i, c := range changes {
		if i == maxLoggedChanges {
			r.o.Logger.Info("policy change", "change", fmt.Sprintf("… and %d more (sluice diff OLD NEW lists them all)", len(changes)-i))
			break
		}
		r.o.Logger.Info("policy change", "change", c)
	}
	if len(p.Skipped) > 0 {
		r.o.Logger.Warn("keys skipped: their key_env variable is unset", "keys", p.Skipped)
	}
	warnUnmatched(r.o.Logger, p)
	r.checkFile(p)
	return true, nil
}

// failed records a reload that applied nothing because of err: counted
// (refused for a *LiftsError, else failure), logged, and kept for Status.
// r.mu is held.
func (r *Reloader) failed(trigger string, err error) error {
	r.lastErr = err
	r.ok.Set(0)
	var lifts *LiftsError
	if errors.As(err, &lifts) {
		r.record(ReloadEvent{Trigger: trigger, Result: ReloadRefused, Error: err.Error(), Changes: lifts.Lifts})
		r.reloads.WithLabelValues(ReloadRefused).Inc()
		r.o.Logger.Error("policy reload refused: it would lift limits; the last good policy stays in force",
			"file", r.o.Path, "trigger", trigger, "lifts", len(lifts.Lifts), "error", err)
		return err
	}
	r.record(ReloadEvent{Trigger: trigger, Result: ReloadFailure, Error: err.Error()})
	r.reloads.WithLabelValues(ReloadFailure).Inc()
	r.o.Logger.Error("policy reload failed; the last good policy stays in force",
		"file", r.o.Path, "trigger", trigger, "error", err)
	return err
}

// settle waits until the file's identity (os.Stat: inode, size, mtime) is
// the same twice settleDelay apart, so a write in progress is not read.
func (r *Reloader) settle() error {
	prev, err := os.Stat(r.o.Path)
	if err != nil {
		return fmt.Errorf("cannot read policies %s: %w", r.o.Path, err)
	}
	for range settleTries {
		time.Sleep(settleDelay)
		fi, err := os.Stat(r.o.Path)
		if err != nil {
			return fmt.Errorf("cannot read policies %s: %w", r.o.Path, err)
		}
		if sameIdentity(prev, fi) {
			return nil
		}
		prev = fi
	}
	return fmt.Errorf("policies %s kept changing for %s; not read while it is being written", r.o.Path, settleDelay*settleTries)
}

// checkFile logs the warnings about the file of policy p, the policy in
// force, and sets sluice_policy_insecure to match. r.mu is held.
func (r *Reloader) checkFile(p *Policy) {
	ws := CheckFile(r.o.Path, p)
	logWarnings(r.o.Logger, r.o.Path, ws)
	for _, reason := range InsecureReasons {
		v := 0.0
		for _, w := range ws {
			if w.Reason == reason {
				v = 1
			}
		}
		r.insecure.WithLabelValues(reason).Set(v)
	}
}

func (r *Reloader) succeeded() {
	r.lastOK = time.Now()
	r.ok.Set(1)
	r.okTime.Set(float64(r.lastOK.UnixNano()) / 1e9)
}

// Start begins watching the file when Interval is set. Stop ends it.
func (r *Reloader) Start() {
	if r.o.Interval <= 0 {
		return
	}
	r.startOnce.Do(func() { r.wg.Go(r.watch) })
}

// Stop ends the watch and waits for it.
func (r *Reloader) Stop() {
	r.stopOnce.Do(func() { close(r.stop) })
	r.wg.Wait()
}

func (r *Reloader) watch() {
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	var seen os.FileInfo
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		seen = r.poll(seen)
	}
}

// poll is one look at the file. seen is a changed identity waiting to
// settle: the file is read only when a poll finds the same changed
// identity again, one Interval later, so a file caught in the middle of an
// in-place write (truncated, half written) is never read. It returns the
// identity to pass to the next poll.
func (r *Reloader) poll(seen os.FileInfo) os.FileInfo {
	fi := r.changed()
	switch {
	case fi == nil:
		return nil
	case seen != nil && sameIdentity(seen, fi):
		_, _ = r.Reload("watch") // logged and counted by Reload
		return nil
	default:
		return fi
	}
}

// changed returns the file's identity when it differs from the last one
// read, nil otherwise. A file that vanished is not a change (a ConfigMap
// swap is atomic; an editor's rename leaves a moment without the file):
// a later poll sees the new one.
func (r *Reloader) changed() os.FileInfo {
	fi, err := os.Stat(r.o.Path)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	prev := r.lastStat
	r.mu.Unlock()
	if prev != nil && sameIdentity(prev, fi) {
		return nil
	}
	return fi
}

// sameIdentity compares device and inode, size and modification time.
func sameIdentity(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
