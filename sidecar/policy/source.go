package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/deputyhq/deputy/sidecar"
)

// Status is what a Source reports about its last attempts, for /readyz
// details, logs and metrics.
type Status struct {
	Source      string    `json:"source"`   // where policies come from
	Revision    string    `json:"revision"` // of the set now serving
	Ready       bool      `json:"ready"`    // a set is serving
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"` // last activation
	LastError   string    `json:"last_error,omitempty"`  // of the last attempt; empty when it succeeded
	Failures    int       `json:"failures,omitempty"`    // consecutive failed attempts
}

// Source feeds an Engine from a directory, a bundle file or a bundle
// server. Every new revision is checked whole before it activates; a bad one
// is refused and the last good set keeps serving.
type Source struct {
	cfg    Config
	engine *Engine
	logger *slog.Logger
	clock  sidecar.Clock
	client *http.Client
	hooks  []func(Status, error)

	fetch    func(ctx context.Context) (*Set, error)
	interval time.Duration // 0: load once

	// State of the fetchers, touched only under attemptMu.
	attemptMu sync.Mutex
	etag      string
	seen      string // fingerprint of the files last tried
	// The ETag, or the SHA-256 of the body when the server sent none, of
	// the bundle last refused while it was read: not read again.
	refusedETag, refusedDigest string
	// The verified signing time and revision of the set serving, so an
	// older bundle is never activated again (see admit).
	activeSignedAt time.Time
	activeRevision string
	minSignedAt    time.Time // policy.min_signed_at
	// The SHA-256 of the bundle from the bundle server that activated, and
	// its activation while it serves: the same bytes again (from a server
	// that sends no ETag, or ignores If-None-Match) are not verified,
	// read or activated again. fetched is that of the bundle just fetched.
	activeDigest, fetched string
	activeAt              *Activation
	// The public key as read for this attempt, and the fingerprint of the
	// key, algorithm and scope the memories above (ETags, digests, the
	// files seen) were made under: a bundle verified, or refused, under
	// one key is read again under another. policy.public_key may name a
	// file replaced while Deputy runs.
	key      *keys.Config
	verifier string
	// A 304 answered a request without If-None-Match at the last attempt,
	// and was reported then.
	bare304 bool
	// settled is the error of the last attempt that fetched something
	// (empty when that served): a poll that finds the same again
	// (errNotModified) shows it as the last error, whatever fetches
	// failed in between.
	settled string
	// The run of failed fetches under way, for the log.
	fetchLog sidecar.FailureLog

	fetchFailures atomic.Uint64

	mu     sync.Mutex
	status Status

	cancel context.CancelFunc
	done   chan struct{}
}

// errNotModified tells the loop that nothing changed since the last attempt.
var errNotModified = errors.New("not modified")

// errServing tells the loop that the bundle fetched is the one serving.
var errServing = errors.New("serving")

// fetchError is a failed fetch: nothing was read to check (the bundle
// server unreachable, an error status, a transfer cut short, policy files
// that cannot be read), so nothing is remembered of it, and the next poll
// fetches again.
type fetchError struct {
	err error
	// kind names the failure for the paced log (sidecar.FailureLog): the error's
	// message, or, for an error status, its code alone, as the server
	// chooses the reason phrase and could vary it at every poll.
	kind string
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

func fetchFailed(err error) error { return &fetchError{err: err, kind: err.Error()} }

// maxReasonPhrase is the most of a bundle server's status line an error
// shows: a server chooses its reason phrase, a megabyte of it included.
const maxReasonPhrase = 128

// shortStatus is status cut to maxReasonPhrase bytes, on a character's
// boundary.
func shortStatus(status string) string {
	if len(status) <= maxReasonPhrase {
		return status
	}
	cut := maxReasonPhrase
	for cut > 0 && !utf8.RuneStart(status[cut]) {
		cut--
	}
	return status[:cut] + "…"
}

// failureKind is the kind of a failed fetch err (see fetchError.kind).
func failureKind(err error) string {
	var fe *fetchError
	if errors.As(err, &fe) {
		return fe.kind
	}
	return err.Error()
}

// FetchFailed reports whether err, from an attempt, is a failed fetch
// (counted in FetchFailures at every poll) rather than a policy set, or
// an answer of the bundle server, refused (reported once while it lasts).
func FetchFailed(err error) bool {
	var fe *fetchError
	return errors.As(err, &fe)
}

// fetchErrorLogEvery is how often, at most, a run of failed fetches is
// logged after its first.
const fetchErrorLogEvery = time.Minute

// SourceOption configures a Source.
type SourceOption func(*Source)

// WithSourceLogger sets the logger.
func WithSourceLogger(l *slog.Logger) SourceOption { return func(s *Source) { s.logger = l } }

// WithSourceClock sets the clock stamped on attempts.
func WithSourceClock(c sidecar.Clock) SourceOption { return func(s *Source) { s.clock = c } }

// WithHTTPClient sets the client used for the bundle server.
func WithHTTPClient(c *http.Client) SourceOption { return func(s *Source) { s.client = c } }

// OnAttempt registers a hook called after every attempt that found
// something new, and after every failed fetch (FetchFailed), with the
// resulting status and the attempt's error (nil on activation). Metrics
// count refusals here: a bundle refused for its signature never reaches
// the engine's OnActivate.
func OnAttempt(f func(Status, error)) SourceOption {
	return func(s *Source) { s.hooks = append(s.hooks, f) }
}

// NewSource returns a source for cfg feeding engine. cfg is defaulted and
// validated here.
func NewSource(cfg Config, engine *Engine, opts ...SourceOption) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{
		cfg:      cfg,
		engine:   engine,
		logger:   slog.Default(),
		clock:    time.Now,
		client:   &http.Client{Timeout: 30 * time.Second},
		fetchLog: sidecar.FailureLog{Every: fetchErrorLogEvery},
	}
	s.minSignedAt, _ = cfg.minSignedAt() // validated above
	for _, o := range opts {
		o(s)
	}
	client := *s.client
	client.CheckRedirect = sidecar.RefuseDowngrade
	// An unsigned bundle is only as trusted as the path it came over: a
	// redirect must not send it across the network in clear when the
	// configured URL does not.
	if u, err := url.Parse(cfg.BundleURL); err == nil && cfg.BundleURL != "" && cfg.PublicKey == "" && !sidecar.PlainRemote(u) {
		client.CheckRedirect = sidecar.RefusePlainRemote
	}
	s.client = &client
	switch {
	case cfg.BundleURL != "":
		// Shown on /readyz and in logs: without the URL's credential.
		s.status.Source = sidecar.RedactURL(cfg.BundleURL)
		s.fetch = s.fetchURL
		s.interval = cfg.PollInterval
	case cfg.BundleFile != "":
		s.status.Source = cfg.BundleFile
		s.fetch = s.fetchBundleFile
	default:
		s.status.Source = strings.Join(cfg.Paths, ",")
		s.fetch = s.fetchPaths
	}
	if cfg.Watch {
		s.interval = cfg.PollInterval
	}
	return s, nil
}

// Start loads the policies once and, for a bundle server or a watched
// source, keeps polling until Stop. A local source that fails its first
// load is an error (a typo in a path should stop the process); a bundle
// server that fails is retried, and the engine stays unready meanwhile.
func (s *Source) Start(ctx context.Context) error {
	err := s.Reload(ctx)
	if err != nil && s.cfg.BundleURL == "" {
		return err
	}
	if s.interval <= 0 {
		return nil
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.loop(lctx)
	return nil
}

// Stop ends polling and waits for an attempt in progress, up to ctx.
func (s *Source) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) loop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = s.Reload(ctx) // recorded in the status and logged
		}
	}
}

// FetchFailures is the number of failed fetches (FetchFailed) since the
// source was made: every poll that failed, logged or not.
func (s *Source) FetchFailures() uint64 { return s.fetchFailures.Load() }

// Status returns the current status.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if a := s.engine.Current(); a != nil {
		st.Ready = true
		st.Revision = a.Revision
	}
	return st
}

// Reload makes one attempt now: fetch, check, activate. It returns nil
// when nothing changed since the last attempt.
func (s *Source) Reload(ctx context.Context) error {
	s.attemptMu.Lock()
	defer s.attemptMu.Unlock()
	now := s.clock()
	s.readKey()
	s.fetched = ""
	set, err := s.fetch(ctx)
	if FetchFailed(err) {
		s.fetchFailed(now, err)
		return err
	}
	if failing, n := s.fetchLog.OK(); failing {
		s.logger.Info("policy source answers again", "source", s.status.Source, "failures_since_last_log", n)
	}
	if err == nil {
		err = s.admit(set)
	}
	if errors.Is(err, errNotModified) || errors.Is(err, errServing) {
		if errors.Is(err, errServing) {
			// What the server sends serves: no attempt is failing.
			s.settled = ""
		}
		s.mu.Lock()
		s.status.LastAttempt = now
		// The outcome of what was last fetched stands again: a refusal
		// still refused, or a set serving, whatever fetches failed since.
		s.status.LastError = s.settled
		if s.settled == "" {
			s.status.Failures = 0
		}
		s.mu.Unlock()
		return nil
	}
	if err == nil {
		if err = s.engine.Activate(ctx, set); err == nil {
			s.activeSignedAt, s.activeRevision = set.SignedAt, set.Revision
			s.activeDigest, s.activeAt = s.fetched, s.engine.Current()
		}
	} else {
		s.logger.Error("policy update refused", "source", s.status.Source, "error", err)
	}
	s.mu.Lock()
	s.status.LastAttempt = now
	if err == nil {
		s.status.LastSuccess = now
		s.status.LastError = ""
		s.status.Failures = 0
	} else {
		s.status.LastError = err.Error()
		s.status.Failures++
	}
	s.settled = s.status.LastError
	s.mu.Unlock()
	s.attempted(err)
	return err
}

// fetchFailed records the failed fetch err at now: counted and shown in
// the status at every poll, logged at the first of a run and at the first
// of another kind (see failureKind), then at most once per fetchErrorLogEvery with how
// many failed since (a short poll_interval would otherwise log a line at
// every poll while a bundle server is down).
func (s *Source) fetchFailed(now time.Time, err error) {
	s.fetchFailures.Add(1)
	first := !s.fetchLog.Failing()
	if log, n := s.fetchLog.Failed(now, failureKind(err)); log {
		if first {
			s.logger.Error("policy update refused", "source", s.status.Source, "error", err)
		} else {
			s.logger.Error("policy update still failing", "source", s.status.Source, "failures_since_last_log", n, "error", err)
		}
	}
	s.mu.Lock()
	s.status.LastAttempt = now
	s.status.LastError = err.Error()
	s.status.Failures++
	s.mu.Unlock()
	s.attempted(err)
}

// attempted tells the hooks of an attempt's outcome.
func (s *Source) attempted(err error) {
	st := s.Status()
	for _, h := range s.hooks {
		h(st, err)
	}
}

// readKey reads policy.public_key for this attempt and, when the key,
// its algorithm or its scope differ from those of the last attempt,
// forgets every bundle remembered as verified, refused or seen: each is
// read and verified again under the key now configured. The key read here
// is the one the attempt verifies with (readOptions), so no bundle is
// remembered under a key it was not verified with.
func (s *Source) readKey() {
	s.key = nil
	verifier := ""
	if s.cfg.PublicKey != "" {
		kc, err := keys.NewKeyConfig(s.cfg.PublicKey, s.cfg.KeyAlgorithm, s.cfg.Scope)
		if err != nil {
			// Refused with this error when the bundle is read.
			verifier = "unreadable\x00" + err.Error()
		} else {
			s.key = kc
			sum := sha256.Sum256([]byte(kc.Algorithm + "\x00" + kc.Scope + "\x00" + kc.Key))
			verifier = hex.EncodeToString(sum[:])
		}
	}
	if verifier == s.verifier {
		return
	}
	s.verifier = verifier
	s.etag, s.seen = "", ""
	s.refusedETag, s.refusedDigest = "", ""
	s.activeDigest, s.activeAt = "", nil
}

// admit refuses a verified bundle signed before the one serving, or before
// policy.min_signed_at: whoever controls the bundle server or the bundle
// file, without the signing key, could otherwise serve an older, validly
// signed bundle and bring back access a newer one withdrew. Once a bundle
// with a signing time serves, one without is refused too (a downgrade).
// Two bundles signed in the same second cannot be ordered: the same
// revision again is accepted (the same build, published anew), another
// revision is refused. Without a public key no time can be trusted, and
// nothing is ordered.
func (s *Source) admit(set *Set) error {
	if s.cfg.PublicKey == "" {
		return nil
	}
	at, rev := set.SignedAt, set.Revision
	if !s.minSignedAt.IsZero() {
		if at.IsZero() {
			return sidecar.Invalid("policy.min_signed_at", "revision %q: its signature carries no signing time (iat), and bundles signed before %s are refused", rev, stamp(s.minSignedAt))
		}
		if at.Before(s.minSignedAt) {
			return sidecar.Invalid("policy.min_signed_at", "revision %q was signed at %s, before %s", rev, stamp(at), stamp(s.minSignedAt))
		}
	}
	active, activeRev := s.activeSignedAt, s.activeRevision
	switch {
	case active.IsZero():
		return nil
	case at.IsZero():
		return sidecar.Invalid("bundle", "revision %q: its signature carries no signing time (iat), and revision %q serving was signed at %s", rev, activeRev, stamp(active))
	case at.Before(active):
		return sidecar.Invalid("bundle", "revision %q was signed at %s, before revision %q serving (%s): an older bundle is not activated again", rev, stamp(at), activeRev, stamp(active))
	case at.Equal(active) && rev != activeRev:
		return sidecar.Invalid("bundle", "revision %q was signed in the same second as revision %q serving (%s), so which is newer is unknown: sign it again", rev, activeRev, stamp(active))
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// bundleRevision is the revision b serves under: its manifest revision
// followed by "+" and the first 12 hex digits of contentDigest, or
// "bundle-" and those digits when the manifest has no revision.
//
// Unverified (no policy.public_key), the manifest revision is whatever
// the bundle's author or anyone who could write the file or the bundle
// server wrote, and a bundle directory edited in place, or a tarball
// repacked with its old .manifest, serves new rules under the old name:
// replicas enforcing different rules would look alike in
// deputy_bundle_info, /readyz and decision records, and deputy eval
// would replay a record against other rules than the ones it names. The
// content's digest tells them apart, and the same content keeps its name
// wherever it is read from (a tarball, the directory it was extracted to,
// a bundle server), so a reload or restart changes no label.
//
// Verified, the manifest revision stands alone: OPA's reader refuses a
// bundle in which any file it takes (the manifest, every module and data
// file; only .signatures.json itself is not) is missing from the
// signature or differs from its signed hash, and Deputy excludes no file
// from verification, so the revision and the content are bound by the
// key holder and only the key holder can serve other content under it.
// A verified bundle without a manifest revision is named by its content,
// as an unsigned one, so that no record goes without a revision.
func bundleRevision(b *bundle.Bundle, verified bool) (string, error) {
	rev := b.Manifest.Revision
	if verified && rev != "" {
		return rev, nil
	}
	digest, err := contentDigest(b)
	if err != nil {
		return "", err
	}
	if rev == "" {
		return "bundle-" + digest[:12], nil
	}
	return rev + "+" + digest[:12], nil
}

// contentDigest is a SHA-256 over what Deputy takes from the bundle b: its
// manifest, its Rego modules (each by its path in the bundle and its
// bytes) and its data (hashed as OPA hashes signed data: objects with
// sorted keys, so neither a file's layout nor the order of the files in a
// tarball counts). Files the reader passes over and the signatures count
// for nothing: they change no rule.
func contentDigest(b *bundle.Bundle) (string, error) {
	hasher, err := bundle.NewSignatureHasher(bundle.SHA256)
	if err != nil {
		return "", err
	}
	manifest, err := json.Marshal(b.Manifest)
	if err != nil {
		return "", fmt.Errorf("bundle manifest: %w", err)
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	type part struct {
		name  string // a module's path; the others start with NUL, which no path holds
		value any
	}
	parts := []part{{"\x00manifest", manifest}, {"\x00data", data}}
	for _, m := range b.Modules {
		// A module's path as tar spelled its member name ("/deputy/a.rego",
		// "./deputy/a.rego", "deputy/a.rego" name one file).
		parts = append(parts, part{path.Clean("/" + m.Path), m.Raw})
	}
	// Stable: a tarball repeating a path keeps its modules in the order
	// the reader took them.
	slices.SortStableFunc(parts, func(a, b part) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	for _, p := range parts {
		sum, err := hasher.HashFile(p.value)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%x\x00", p.name, sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fromBundle is the set of a bundle just read, under the revision
// bundleRevision names. Its signing time is kept only when a public key
// verified the signature.
func (s *Source) fromBundle(b *bundle.Bundle) (*Set, error) {
	set := SetFromBundle(b, s.status.Source)
	rev, err := bundleRevision(b, s.cfg.PublicKey != "")
	if err != nil {
		return nil, err
	}
	set.Revision = rev
	if s.cfg.PublicKey == "" {
		return set, nil
	}
	at, err := SignedAt(b)
	if err != nil {
		return nil, err
	}
	set.SignedAt = at
	return set, nil
}

func (s *Source) readOptions() ReadOptions {
	return ReadOptions{PublicKey: s.cfg.PublicKey, Algorithm: s.cfg.KeyAlgorithm, Scope: s.cfg.Scope, Roots: s.cfg.Roots, MaxBytes: s.cfg.MaxBundleBytes, MaxValues: s.cfg.MaxBundleValues, key: s.key}
}

func (s *Source) fetchPaths(context.Context) (*Set, error) {
	var filter dirFilter // LoadPaths's
	set, fp, err := s.readSettled(s.cfg.Paths, "policy.paths", filter.watched, func() (*Set, error) {
		return loadPaths(s.cfg.Paths, s.cfg.MaxBundleBytes, s.cfg.MaxBundleValues)
	})
	if err != nil {
		return nil, err
	}
	// Local files have no manifest; the digest of their content tells
	// revisions apart in logs, metrics and input.deputy.revision.
	set.Revision = "local-" + fp[:12]
	return set, nil
}

func (s *Source) fetchBundleFile(context.Context) (*Set, error) {
	set, _, err := s.readSettled([]string{s.cfg.BundleFile}, "policy.bundle_file", bundleFileWatched, func() (*Set, error) {
		b, err := ReadBundleFile(s.cfg.BundleFile, s.readOptions())
		if err != nil {
			return nil, err
		}
		return s.fromBundle(b)
	})
	return set, err
}

// maxSettleReads bounds how often readSettled reads files that keep
// changing under it before it gives up until the next poll.
const maxSettleReads = 3

// readSettled reads the files under paths with read when their digest
// differs from the one last tried, and returns the set with the digest of
// what it read: the files are digested again after the read, and read
// again while the two digests differ, so a set read while a deployment was
// writing its files is never served under the digest of other content.
// errNotModified when the files are those last tried, whether they served
// or were refused.
func (s *Source) readSettled(paths []string, field string, watched watchFilter, read func() (*Set, error)) (*Set, string, error) {
	fp, err := fingerprint(paths, s.cfg.MaxBundleBytes, watched)
	if err != nil {
		return nil, "", fetchFailed(sidecar.Invalid(field, "%v", err))
	}
	for range maxSettleReads {
		if fp == s.seen {
			return nil, "", errNotModified
		}
		s.seen = fp
		set, err := read()
		after, ferr := fingerprint(paths, s.cfg.MaxBundleBytes, watched)
		if ferr != nil {
			s.seen = ""
			return nil, "", fetchFailed(sidecar.Invalid(field, "%v", ferr))
		}
		if after == fp {
			return set, fp, err
		}
		fp = after
	}
	s.seen = "" // tried again at the next poll
	return nil, "", fetchFailed(sidecar.Invalid(field, "%s kept changing while read (%d reads); tried again at the next poll", strings.Join(paths, ","), maxSettleReads))
}

func (s *Source) fetchURL(ctx context.Context) (*Set, error) {
	reported := s.bare304
	s.bare304 = false
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.BundleURL, nil)
	if err != nil {
		return nil, fetchFailed(sidecar.Invalid("policy.bundle_url", "%v", sidecar.RedactURLError(err)))
	}
	req.Header.Set("Accept", "application/gzip, application/octet-stream")
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	if s.cfg.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.BearerToken)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// Go's text of a failed connection changes from poll to poll (the
		// local port of a reset, the time of an expired certificate):
		// one kind, so the log stays paced.
		return nil, &fetchError{err: sidecar.Unavailable("bundle server unreachable", sidecar.RedactURLError(err)), kind: "unreachable"}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		if s.etag != "" {
			return nil, errNotModified // the bundle of that ETag: what serves stays
		}
		// Without If-None-Match the request named no bundle, so a 304
		// names none to keep: after a start there is none at all. A cache
		// or proxy answering in the bundle server's place for another
		// client sends this, and without an error nothing would show why
		// no policy loads. Reported once, when it begins; what serves
		// stays.
		s.bare304 = true
		if reported {
			return nil, errNotModified
		}
		return nil, sidecar.Unavailable("bundle server", fmt.Errorf("GET %s: 304 Not Modified to a request without If-None-Match, "+
			"which names no bundle to keep (a cache or proxy answering in the bundle server's place?)", s.status.Source))
	default:
		// The reason phrase is the server's: shown cut to a line's worth.
		return nil, &fetchError{err: sidecar.Unavailable("bundle server", fmt.Errorf("GET %s: %s", s.status.Source, shortStatus(resp.Status))),
			kind: "status " + strconv.Itoa(resp.StatusCode)}
	}
	etag := resp.Header.Get("ETag")
	if etag != "" && etag == s.refusedETag {
		return nil, errNotModified // a server that ignores If-None-Match, sending the bundle last refused
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxBundleBytes+1))
	if err != nil {
		// The transfer's failure, not the bundle's: tried again next poll.
		return nil, &fetchError{err: sidecar.Unavailable("bundle server", fmt.Errorf("GET %s: %w", s.status.Source, sidecar.RedactURLError(err))), kind: "transfer"}
	}
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])
	if etag == "" && digest == s.refusedDigest {
		return nil, errNotModified
	}
	if digest == s.activeDigest && s.activeAt != nil && s.engine.Current() == s.activeAt {
		// The bundle serving, verified under the key configured now
		// (readKey): activating it again would cost a compile and count
		// an activation at every poll. Its ETag, when new, is sent next.
		s.etag = etag
		s.refusedETag, s.refusedDigest = "", ""
		return nil, errServing
	}
	opts := s.readOptions()
	opts.Etag = etag
	b, err := readBundleBytes(body, opts)
	var cut archiveError
	if errors.As(err, &cut) {
		// Truncated or corrupt, as a transfer cut short (a body without
		// a length, closed early) leaves it too: tried again next poll.
		return nil, fetchFailed(err)
	}
	// The ETag is remembered before activation: a bundle that reads fine
	// but fails to compile is not fetched again until the server changes
	// it. So is one refused while read (its signature, its size, the
	// values its data would parse into), by its ETag or, when the server
	// sends none, by its digest: reading it again would cost as much at
	// every poll, and be refused again. It stays counted once, as a
	// failure, and a changed bundle is read at once.
	s.etag = etag
	s.refusedETag, s.refusedDigest = "", ""
	if err == nil {
		var set *Set
		if set, err = s.fromBundle(b); err == nil {
			s.fetched = digest
			return set, nil
		}
	}
	s.refusedETag, s.refusedDigest = etag, digest
	return nil, err
}

// fingerprint digests the files under paths that the loader reads, as it
// reads them (watched is the loader's filter), through symlinks: each
// file's place (the position of its root in paths, its path below that
// root) and its content, and the place of each file the loader refuses.
// Files the loader passes over count for nothing. Content, not
// size and modification time: policies deployed from a reproducible
// archive (one fixed time on every file), or copied with cp -p or rsync
// -a, keep their times, and an edit that keeps a file's size would go
// unnoticed, and two sets of rules would share a revision. Paths are
// relative to their roots, so the same files give the same digest
// wherever they are mounted. A mounted ConfigMap or Secret is a tree of
// symlinks through ..data, which the kubelet swaps to a new hidden
// directory on every update: the content is read through the links.
//
// Policies are small: reading the shipped ones on every poll takes under a
// millisecond, against a poll every 2 s by default. The files read are
// bounded by max in total (policy.max_bundle_bytes), so a path pointed at
// a large tree of policies is refused rather than read every poll.
func fingerprint(paths []string, max int64, watched watchFilter) (string, error) {
	d := treeDigest{h: sha256.New(), left: max, max: max, watched: watched}
	for i, root := range paths {
		info, err := os.Stat(root)
		if err == nil {
			rel := ""
			if !info.IsDir() {
				rel = filepath.Base(root)
			}
			err = d.walk(root, fmt.Sprintf("%d", i), rel, 0)
		}
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("%s does not exist", root)
			}
			return "", err
		}
	}
	return hex.EncodeToString(d.h.Sum(nil)), nil
}

// maxTreeDepth bounds how deep fingerprint follows directories, so a
// symlink loop is an error rather than a walk without end.
const maxTreeDepth = 64

// watchFilter tells fingerprint what of a file or directory found
// depth levels below its root the loader's result depends on.
type watchFilter func(abspath string, info os.FileInfo, depth int) digestOf

type digestOf int

const (
	digestNothing digestOf = iota // passed over
	digestName                    // refused by its name
	digestContent                 // read (a directory: walked)
)

// bundleFileWatched is policy.bundle_file's watchFilter: a tarball is
// read whole, and a bundle directory as bundleDir lists it.
func bundleFileWatched(abspath string, info os.FileInfo, depth int) digestOf {
	if bundleDirSkip(abspath, info, depth) {
		return digestNothing
	}
	return digestContent
}

// treeDigest accumulates fingerprint's digest: for every file, its root's
// position, its slash-separated path below the root and the SHA-256 of its
// content (or "refused"), each ended by a NUL (which no file name holds).
type treeDigest struct {
	h         hash.Hash
	left, max int64 // bytes that may still be read, of max
	buf       []byte
	watched   watchFilter
}

func (d *treeDigest) walk(p, root, rel string, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("%s: directories nested deeper than %d (a symlink loop?)", p, maxTreeDepth)
	}
	info, err := os.Stat(p) // through symlinks, as the loader reads
	if err != nil {
		return err
	}
	switch d.watched(p, info, depth) {
	case digestNothing:
		return nil
	case digestName:
		fmt.Fprintf(d.h, "%s\x00%s\x00refused\x00", root, rel)
		return nil
	}
	if !info.IsDir() {
		sum, err := d.file(p, info)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.h, "%s\x00%s\x00%x\x00", root, rel, sum)
		return nil
	}
	entries, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if err := d.walk(filepath.Join(p, name), root, path.Join(rel, name), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// file returns the SHA-256 of the content of the file at p. A file that
// is not regular (a fifo, a device) is digested by its mode alone: reading
// it could block or never end, and the loader refuses it anyway.
func (d *treeDigest) file(p string, info os.FileInfo) ([]byte, error) {
	h := sha256.New()
	if !info.Mode().IsRegular() {
		fmt.Fprintf(h, "%v", info.Mode())
		return h.Sum(nil), nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if d.buf == nil {
		d.buf = make([]byte, 32<<10)
	}
	n, err := io.CopyBuffer(h, io.LimitReader(f, d.left+1), d.buf)
	if err != nil {
		return nil, err
	}
	if d.left -= n; d.left < 0 {
		return nil, fmt.Errorf("the files add up to more than policy.max_bundle_bytes (%d bytes)", d.max)
	}
	return h.Sum(nil), nil
}
