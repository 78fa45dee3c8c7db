// Package identity owns who a request comes from: it verifies bearer JWTs
// against the trusted issuers' key sets (files or URLs, cached, refreshed
// at a bounded rate on an unknown kid, or on no kid and no key that
// verifies), maps their claims to sidecar.Identity, and runs the dev
// issuer that mints local test tokens.
package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/strictjson"
)

// Reasons a presented token is refused. They are the Message of the
// EUNAUTHORIZED error and reach policy as input.identity_error.
const (
	ReasonMalformed     = "malformed_token"
	ReasonAlgNotAllowed = "alg_not_allowed"
	ReasonUnknownKid    = "unknown_kid"
	ReasonBadSignature  = "bad_signature"
	ReasonIssuer        = "issuer_mismatch"
	ReasonAudience      = "audience_mismatch"
	ReasonExpired       = "token_expired"
	ReasonNotYetValid   = "token_not_yet_valid"
	ReasonMissingExp    = "missing_exp"
	ReasonMissingSub    = "missing_sub"
	// ReasonReservedNamespace refuses a token of the issuer without a
	// namespace whose sub, org or domain is spelled in another issuer's
	// namespace: it would name that issuer's people.
	ReasonReservedNamespace = "reserved_namespace"
	// ReasonAmbiguousKey refuses, untried, a token that names no kid, or
	// a kid its issuer gives many keys, when more than MaxKeysPerToken of
	// the issuer's keys could have signed it.
	ReasonAmbiguousKey = "ambiguous_key"
	// ReasonStaleKeys refuses a token of an issuer whose key set has not
	// been fetched for identity.max_key_age.
	ReasonStaleKeys = "stale_keys"
	// ReasonDelegatedToken refuses a token carrying an act claim (RFC
	// 8693 §4.1: its act acts for its sub), such as another Deputy's actor
	// token: read as an identity it would be its subject acting, and the
	// actor would reach neither policy nor the decision record.
	ReasonDelegatedToken = "delegated_token"
)

// MaxTokenSize refuses absurd tokens before any parsing.
const MaxTokenSize = 16 << 10

// MaxKeysPerToken bounds the signature checks one token costs: a token is
// tried only against the keys of the issuer its iss names, those its kid
// names (all of them without a kid) that fit its alg, and when there are
// more than this it is refused untried (ReasonAmbiguousKey). An identity
// provider that signs without kids rotates through two or three keys; one
// with more names them.
const MaxKeysPerToken = 4

// DefaultCacheSize is how many verified tokens, and separately how many
// refused ones, are remembered. A caller presents the same token on every
// request of a page load, so a hit saves the parse and the signature
// check, which dominate verification.
const DefaultCacheSize = 4096

// Verifier implements sidecar.IdentityVerifier for bearer JWTs.
type Verifier struct {
	header     string
	algs       []jose.SignatureAlgorithm
	leeway     time.Duration
	refresh    time.Duration
	minRefresh time.Duration
	timeout    time.Duration
	maxKeyAge  time.Duration
	issuers    []*issuer
	byName     map[string]*issuer
	clock      sidecar.Clock
	logger     *slog.Logger
	cacheSize  int
	started    time.Time

	index atomic.Pointer[keyIndex]
	// sigChecks counts signature verifications, the cost a token imposes.
	sigChecks atomic.Int64
	// unready is why Ready fails (nil while every issuer it answers for
	// has keys), and unreadyNamespaced why NamespacedReady does, set
	// after every load: a probe reads them without waiting for a key set
	// fetch in flight, which any client can start with a junk token.
	unready, unreadyNamespaced atomic.Pointer[sidecar.Error]
	// apart is whether the issuers with a namespace are reported apart
	// (NamespacedReady): when one issuer has none and others do.
	apart bool

	refreshMu sync.Mutex // serialises loads; guards issuer.keys and loadErr
	// Key set fetches triggered by a token (an unknown kid, or no kid and
	// no key that verifies) belong to the verifier, not to its request:
	// they run under life (ended by Close), one at a time through
	// missFlight, so a request that goes away neither aborts a fetch nor
	// spends the rate bound for nothing.
	missMu     sync.Mutex // guards issuer.nextMiss and closed
	missFlight singleflight.Group
	missWG     sync.WaitGroup
	life       context.Context
	end        context.CancelFunc
	closed     bool

	verdicts    *verdicts
	stop        context.CancelFunc
	done        chan struct{}
	startedOnce sync.Once
}

var _ sidecar.IdentityVerifier = (*Verifier)(nil)

type issuer struct {
	name      string
	audiences []string
	claims    claimPaths
	// prefix ("<namespace>:", or "" without a namespace) is put before
	// the sub, org and domain of this issuer's tokens; reserved are the
	// other issuers' prefixes, which names of an issuer without one must
	// not start with.
	prefix   string
	reserved []string
	// roles and privileges are what an issuer with a namespace may
	// assert; the others its tokens claim are dropped. The issuer
	// without a namespace asserts every one.
	roles, privileges map[string]bool
	allowSetting      string // where roles are listed, for the start-up log
	src               source
	keys              []jose.JSONWebKey
	loadErr           error
	// nextMiss is when an unknown kid may fetch this issuer's keys again.
	nextMiss time.Time
	// loadedAt is when the keys were last loaded without error (Unix
	// nanoseconds; changed or not: a fetch that finds the same keys
	// confirms them), and failures counts the loads that failed. A scrape
	// reads them without waiting for a fetch in flight.
	loadedAt atomic.Int64
	failures atomic.Uint64
}

// keyIndex is immutable; a refresh builds a new one.
type keyIndex struct {
	of map[*issuer]issuerKeys
}

// issuerKeys are one issuer's keys, by kid and all of them.
type issuerKeys struct {
	byKid map[string][]*jose.JSONWebKey
	all   []*jose.JSONWebKey
}

// keysOf returns is's keys that a token naming kid may have been signed
// with: every one when kid is empty. known is false when kid names none.
func (idx *keyIndex) keysOf(is *issuer, kid string) (keys []*jose.JSONWebKey, known bool) {
	ik := idx.of[is]
	if kid == "" {
		return ik.all, true
	}
	keys = ik.byKid[kid]
	return keys, len(keys) > 0
}

// Option configures a Verifier.
type Option func(*Verifier, *options)

type options struct {
	httpClient *http.Client
	dev        *DevIssuer
}

// WithClock injects the clock used for exp/nbf checks.
func WithClock(c sidecar.Clock) Option { return func(v *Verifier, _ *options) { v.clock = c } }

// WithLogger injects the logger.
func WithLogger(l *slog.Logger) Option { return func(v *Verifier, _ *options) { v.logger = l } }

// WithHTTPClient sets the client used to fetch key sets.
func WithHTTPClient(c *http.Client) Option {
	return func(_ *Verifier, o *options) { o.httpClient = c }
}

// WithDevIssuer trusts the dev issuer's key for tokens with issuer
// DevIssuerName and audience DevAudience.
func WithDevIssuer(d *DevIssuer) Option { return func(_ *Verifier, o *options) { o.dev = d } }

// WithCacheSize bounds the verified-token and refused-token caches; 0
// turns them off.
func WithCacheSize(n int) Option { return func(v *Verifier, _ *options) { v.cacheSize = n } }

// New validates cfg and builds a Verifier. Key set files are read now, so a
// malformed file fails start-up; URLs are fetched by Start.
func New(cfg Config, opts ...Option) (*Verifier, error) {
	v := &Verifier{clock: time.Now, logger: slog.Default(), cacheSize: DefaultCacheSize}
	v.life, v.end = context.WithCancel(context.Background())
	var o options
	for _, opt := range opts {
		opt(v, &o)
	}
	// The dev issuer given is trusted whatever the switch says, so it
	// counts among the issuers that need namespaces.
	if o.dev != nil {
		cfg.Dev.Enabled = true
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v.header, v.leeway, v.timeout = cfg.Header, *cfg.Leeway, cfg.FetchTimeout
	v.refresh, v.minRefresh, v.maxKeyAge = cfg.RefreshInterval, cfg.MinRefreshInterval, cfg.MaxKeyAge
	v.verdicts = newVerdicts(v.cacheSize)
	for _, a := range cfg.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	client := &http.Client{Timeout: cfg.FetchTimeout}
	if o.httpClient != nil {
		c := *o.httpClient
		client = &c
	}
	// Outside dev mode keys never come over plain http from another host
	// (Validate refuses such URLs): not through a redirect either.
	client.CheckRedirect = sidecar.RefusePlainRemote
	if cfg.Dev.Enabled {
		client.CheckRedirect = sidecar.RefuseDowngrade
	}
	for i, ic := range cfg.allIssuers() {
		is := &issuer{name: ic.Issuer, audiences: ic.Audiences, prefix: namespacePrefix(ic.Namespace),
			roles: set(ic.Roles), privileges: set(ic.Privileges), allowSetting: "identity.issuers[" + strconv.Itoa(i) + "].roles"}
		if len(is.audiences) == 0 {
			is.audiences = cfg.Audiences
		}
		cc := cfg.Claims
		if ic.Claims != nil {
			cc = ic.Claims.withDefaults(cfg.Claims)
		}
		is.claims = compileClaims(cc)
		switch {
		case ic.JWKSFile != "":
			is.src = &fileSource{path: ic.JWKSFile}
		case ic.JWKSURL != "":
			is.src = &urlSource{url: ic.JWKSURL, client: client}
		default:
			is.src = &discoverySource{issuer: ic.Issuer, client: client, plainRemoteOK: cfg.Dev.Enabled}
		}
		v.issuers = append(v.issuers, is)
	}
	if cfg.Dev.Enabled && o.dev == nil {
		return nil, sidecar.Invalid("identity.dev.enabled", "dev mode needs the dev issuer's key")
	}
	if o.dev != nil {
		v.issuers = append(v.issuers, &issuer{
			name:         DevIssuerName,
			audiences:    []string{DevAudience},
			claims:       compileClaims(DefaultClaims()),
			prefix:       namespacePrefix(cfg.Dev.Namespace),
			roles:        set(cfg.Dev.Roles),
			privileges:   set(cfg.Dev.Privileges),
			allowSetting: "identity.dev.roles",
			src:          &staticSource{keys: []jose.JSONWebKey{o.dev.PublicKey()}, name: "dev issuer"},
		})
		v.addAlg(jose.ES256)
	}
	reserveNamespaces(v.issuers)
	bare := 0
	for _, is := range v.issuers {
		if is.prefix == "" {
			bare++
		}
	}
	v.apart = bare > 0 && bare < len(v.issuers)
	v.byName = make(map[string]*issuer, len(v.issuers))
	for _, is := range v.issuers {
		v.byName[is.name] = is
	}
	for _, is := range v.issuers {
		if is.prefix != "" && len(is.roles)+len(is.privileges) == 0 {
			v.logger.Info("identity: issuer has a namespace and no roles or privileges listed, so its tokens assert none: "+
				"the roles and privileges they claim are dropped",
				"issuer", shownIssuer(is.name), "namespace", strings.TrimSuffix(is.prefix, ":"), "setting", is.allowSetting)
		}
	}
	v.index.Store(&keyIndex{})
	v.started = v.clock()
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	for _, is := range v.issuers {
		if is.src.remote() {
			continue
		}
		if _, err := v.loadLocked(context.Background(), is); err != nil {
			return nil, sidecar.Invalid("identity.issuers", "issuer %q: key set %s: %v", shownIssuer(is.name), is.src, err)
		}
	}
	v.rebuildLocked()
	v.readinessLocked()
	return v, nil
}

func set(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

func namespacePrefix(ns string) string {
	if ns == "" {
		return ""
	}
	return ns + ":"
}

// reserveNamespaces gives the issuer without a namespace (validation
// allows one at most) every other issuer's prefix to refuse.
func reserveNamespaces(issuers []*issuer) {
	var reserved []string
	for _, is := range issuers {
		if is.prefix != "" {
			reserved = append(reserved, sidecar.FoldID(is.prefix))
		}
	}
	for _, is := range issuers {
		if is.prefix == "" {
			is.reserved = reserved
		}
	}
}

func (v *Verifier) addAlg(a jose.SignatureAlgorithm) {
	for _, have := range v.algs {
		if have == a {
			return
		}
	}
	v.algs = append(v.algs, a)
}

// Start fetches key set URLs once and refreshes every key set periodically
// until Close. A URL that cannot be fetched at start is logged and retried:
// tokens from that issuer are refused (unknown_kid) until it answers.
func (v *Verifier) Start(ctx context.Context) error {
	v.startedOnce.Do(func() {
		v.Refresh(ctx)
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		v.stop = cancel
		v.done = make(chan struct{})
		go v.loop(ctx)
	})
	return nil
}

// Close stops the periodic refresh and any fetch an unknown kid started;
// unknown kids fetch nothing after it.
func (v *Verifier) Close() error {
	if v.stop != nil {
		v.stop()
		<-v.done
	}
	v.missMu.Lock()
	v.closed = true
	v.missMu.Unlock()
	v.end()
	v.missWG.Wait()
	return nil
}

func (v *Verifier) loop(ctx context.Context) {
	defer close(v.done)
	t := time.NewTicker(v.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.Refresh(ctx)
		}
	}
}

// Refresh reloads every key set now.
func (v *Verifier) Refresh(ctx context.Context) {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	v.refreshLocked(ctx, v.issuers)
}

// refreshLocked reloads the key sets of issuers and returns, for each,
// whether its load failed.
func (v *Verifier) refreshLocked(ctx context.Context, issuers []*issuer) (failed []bool) {
	changed := false
	failed = make([]bool, len(issuers))
	for i, is := range issuers {
		ok, err := v.loadLocked(ctx, is)
		if err != nil {
			v.logger.Warn("identity: key set refresh failed; keeping the previous keys",
				"issuer", shownIssuer(is.name), "source", is.src.String(), "err", err)
			failed[i] = true
			continue
		}
		changed = changed || ok
	}
	if changed {
		v.rebuildLocked()
	}
	v.readinessLocked()
	return failed
}

// shownIssuer is an issuer's name fit for logs, errors and /readyz: an
// issuer URL without its credential (sidecar.RedactURL); a name that is
// not a URL as it is.
func shownIssuer(name string) string {
	if strings.Contains(name, "://") {
		return sidecar.RedactURL(name)
	}
	return name
}

// loadLocked loads one issuer's keys; the previous keys stay on error.
func (v *Verifier) loadLocked(ctx context.Context, is *issuer) (changed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	keys, changed, err := is.src.load(ctx)
	is.loadErr = err
	if err != nil {
		is.failures.Add(1)
		return false, err
	}
	is.loadedAt.Store(v.clock().UnixNano())
	if !changed {
		return false, nil
	}
	is.keys = keys
	return true, nil
}

func (v *Verifier) rebuildLocked() {
	idx := &keyIndex{of: make(map[*issuer]issuerKeys, len(v.issuers))}
	for _, is := range v.issuers {
		ik := issuerKeys{byKid: map[string][]*jose.JSONWebKey{}}
		for i := range is.keys {
			k := &is.keys[i]
			ik.all = append(ik.all, k)
			if k.KeyID != "" {
				ik.byKid[k.KeyID] = append(ik.byKid[k.KeyID], k)
			}
		}
		idx.of[is] = ik
	}
	v.index.Store(idx)
	// A key that left the set must stop vouching for tokens at once;
	// verdicts are tied to the index too, this only frees them.
	v.verdicts.purge()
}

// errNoKey is why a token is refused when none of the keys it may have
// been signed with verifies it.
var errNoKey = errors.New("no key loaded verifies the signature")

// noKidNoKey is why a token that names no kid is refused when no key of
// its issuer verifies it. A later key set may hold its key, so the refusal
// is remembered only until retry, when the token may make the issuer's keys
// be fetched again (refreshOnMiss): until then, under the same keys, it
// would be refused alike.
type noKidNoKey struct{ retry time.Time }

func (*noKidNoKey) Error() string {
	return "no kid, and no key loaded verifies the signature"
}

// errAmbiguous is why a token is refused untried (ReasonAmbiguousKey).
var errAmbiguous = fmt.Errorf("more than %d keys of its issuer could have signed it: the token must name its key (kid)", MaxKeysPerToken)

// missRetry is how soon an unknown kid may fetch an issuer's keys again
// after a fetch of them failed (capped at MinRefreshInterval): a failure
// must not keep a rotated key out for the whole interval, nor may forged
// kids make Deputy hammer an identity provider that is down.
const missRetry = time.Second

// refreshOnMiss reloads is's key set because a token of is named a kid
// is does not publish, or named none and no key of is verifies it (is
// rotated). Each issuer's keys are fetched at most once per
// MinRefreshInterval after a fetch that succeeded, so junk tokens cannot
// make Deputy hammer the identity provider. The fetch is the verifier's
// own, shared by every miss of is while it runs; the caller stops waiting
// for it when ctx ends, and the fetch completes and is used all the same.
func (v *Verifier) refreshOnMiss(ctx context.Context, is *issuer) {
	if !v.dueOnMiss(is) {
		return
	}
	select {
	case <-v.missFlight.DoChan(is.name, func() (any, error) {
		v.fetchOnMiss(is)
		return nil, nil
	}):
	case <-ctx.Done():
	}
}

// dueOnMiss reports whether a miss may fetch is's keys now: never once the
// verifier is closed.
func (v *Verifier) dueOnMiss(is *issuer) bool {
	v.missMu.Lock()
	defer v.missMu.Unlock()
	return !v.closed && !v.clock().Before(is.nextMiss)
}

// nextMissOf is when a miss may fetch is's keys again.
func (v *Verifier) nextMissOf(is *issuer) time.Time {
	v.missMu.Lock()
	defer v.missMu.Unlock()
	return is.nextMiss
}

// fetchOnMiss fetches is's keys if still due, under the verifier's own
// context (bounded by FetchTimeout), and takes its rate slot from when the
// fetch ends: MinRefreshInterval after a success, missRetry after a
// failure.
func (v *Verifier) fetchOnMiss(is *issuer) {
	v.missMu.Lock()
	if v.closed {
		v.missMu.Unlock()
		return
	}
	v.missWG.Add(1)
	v.missMu.Unlock()
	defer v.missWG.Done()
	if !v.dueOnMiss(is) {
		return
	}
	v.refreshMu.Lock()
	failed := v.refreshLocked(v.life, []*issuer{is})
	v.refreshMu.Unlock()
	v.missMu.Lock()
	defer v.missMu.Unlock()
	is.nextMiss = v.clock().Add(v.minRefresh)
	if failed[0] {
		is.nextMiss = v.clock().Add(min(missRetry, v.minRefresh))
	}
}

// KeySetStatus is one trusted issuer's key set as the verifier's loads
// left it.
type KeySetStatus struct {
	// Issuer is the issuer's name as logs show it (a URL without its
	// credential).
	Issuer string
	// Age is how long ago the key set was last fetched (or read)
	// without error, whether or not it changed; since New while it never
	// was. The dev issuer's key, held in process, is always 0 old.
	Age time.Duration
	// FetchFailures counts the loads of the key set that failed; the
	// previous keys stayed.
	FetchFailures uint64
}

// KeySets reports every trusted issuer's key set, for the metrics: while
// fetches fail the previous keys keep verifying, a key the issuer removed
// among them, so how long that has lasted must show. It never waits for a
// fetch in flight.
func (v *Verifier) KeySets() []KeySetStatus {
	now := v.clock()
	out := make([]KeySetStatus, 0, len(v.issuers))
	for _, is := range v.issuers {
		ks := KeySetStatus{Issuer: shownIssuer(is.name), FetchFailures: is.failures.Load()}
		if _, inProcess := is.src.(*staticSource); !inProcess {
			ks.Age = max(now.Sub(v.loadedAt(is)), 0)
		}
		out = append(out, ks)
	}
	return out
}

// stale reports whether is's keys have gone unconfirmed for longer than
// max_key_age (never when it is off, nor for keys held in process).
func (v *Verifier) stale(is *issuer, now time.Time) bool {
	if v.maxKeyAge <= 0 || is == nil {
		return false
	}
	if _, inProcess := is.src.(*staticSource); inProcess {
		return false
	}
	return now.Sub(v.loadedAt(is)) > v.maxKeyAge
}

// loadedAt is when is's keys were last loaded without error; when the
// verifier was made while they never were.
func (v *Verifier) loadedAt(is *issuer) time.Time {
	if ns := is.loadedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return v.started
}

// Ready reports whether the issuer without a namespace has keys (every
// issuer, when all have a namespace or none has), as the last load left
// them: it never waits for a load. The issuers with a namespace beside
// it, partners' identity providers, are NamespacedReady's: the outage of
// one must not keep a pod out of service while it decides the others'
// tokens and anonymous requests.
func (v *Verifier) Ready() error {
	if err := v.unready.Load(); err != nil {
		return err
	}
	return nil
}

// NamespacedReady reports whether every issuer with a namespace has keys,
// when Ready leaves them out (HasNamespacedReadiness); nil otherwise.
func (v *Verifier) NamespacedReady() error {
	if err := v.unreadyNamespaced.Load(); err != nil {
		return err
	}
	return nil
}

// HasNamespacedReadiness reports whether NamespacedReady answers for
// issuers Ready leaves out.
func (v *Verifier) HasNamespacedReadiness() bool { return v.apart }

// readinessLocked records what Ready and NamespacedReady answer after a
// load.
func (v *Verifier) readinessLocked() {
	v.unready.Store(v.missingKeysLocked(false))
	v.unreadyNamespaced.Store(v.missingKeysLocked(true))
}

// missingKeysLocked is why the issuers with a namespace (namespaced) or
// the others fall short: the first of them without keys. Without apart,
// every issuer counts among the others.
func (v *Verifier) missingKeysLocked(namespaced bool) *sidecar.Error {
	for _, is := range v.issuers {
		if (v.apart && is.prefix != "") != namespaced {
			continue
		}
		if len(is.keys) == 0 {
			return sidecar.Unavailable("identity: no keys for issuer "+shownIssuer(is.name), is.loadErr)
		}
	}
	return nil
}

func unauthorized(reason string, cause error) error {
	return sidecar.Refused(sidecar.EUNAUTHORIZED, reason, cause)
}

// Verify implements sidecar.IdentityVerifier. The returned Identity may be
// shared with other requests presenting the same token: do not modify it.
func (v *Verifier) Verify(ctx context.Context, r *sidecar.Request) (*sidecar.Identity, error) {
	h := r.Header(v.header)
	if strings.Contains(v.header, "-") {
		// CGI, PHP and WSGI upstreams read x_auth_token as x-auth-token
		// (PHP keeps the last): a token under another spelling of the
		// name would be the one the application acts on, unchecked.
		// The token is read under whichever spelling it comes. The
		// configured name is held with "-" (SetDefaults), so a name
		// configured as x_auth_token is read so too; one with neither
		// (authorization) has a single spelling and pays nothing.
		var buf [2]string
		switch vals := r.AppendHeaderValues(buf[:0], v.header); len(vals) {
		case 0:
			h = ""
		case 1:
			h = vals[0]
		default:
			return nil, unauthorized(ReasonMalformed, fmt.Errorf("%s is sent more than once, or under several spellings", v.header))
		}
	}
	if h == "" {
		return nil, nil
	}
	token, err := bearerToken(h)
	if err != nil {
		return nil, unauthorized(ReasonMalformed, err)
	}
	if token == "" {
		return nil, nil // another scheme: not ours to judge
	}
	return v.VerifyToken(ctx, token)
}

// VerifyToken verifies a raw compact JWT.
func (v *Verifier) VerifyToken(ctx context.Context, token string) (*sidecar.Identity, error) {
	if token == "" || len(token) > MaxTokenSize {
		return nil, unauthorized(ReasonMalformed, errors.New("empty or oversized token"))
	}
	now := v.clock()
	idx := v.index.Load()
	// A remembered identity is the verdict of keys that may have gone
	// stale since: it is not served then, so verify refuses it.
	if id, err, ok := v.verdicts.lookup(token, idx, now, v.leeway); ok && (id == nil || !v.stale(v.byName[id.Issuer], now)) {
		return id, err
	}
	id, exp, idx, err := v.verify(ctx, token, idx, now)
	if v.index.Load() == idx {
		// Not when the keys changed while verifying: the verdict must
		// not outlive them.
		v.verdicts.remember(token, idx, now, id, exp, err)
	}
	return id, err
}

// verify parses and checks token under the key index idx (refreshed on an
// unknown kid) and returns the identity and its exp, with the index the
// verdict was reached under.
func (v *Verifier) verify(ctx context.Context, token string, idx *keyIndex, now time.Time) (*sidecar.Identity, time.Time, *keyIndex, error) {
	refused := func(reason string, cause error) (*sidecar.Identity, time.Time, *keyIndex, error) {
		return nil, time.Time{}, idx, unauthorized(reason, cause)
	}
	jws, err := jose.ParseSignedCompact(token, v.algs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) && algErr.Got != "" {
			return refused(ReasonAlgNotAllowed, err)
		}
		return refused(ReasonMalformed, err)
	}
	if len(jws.Signatures) != 1 {
		return refused(ReasonMalformed, errors.New("want exactly one signature"))
	}
	if err := checkHeader(token); err != nil {
		return refused(ReasonMalformed, err)
	}
	hdr := jws.Signatures[0].Protected
	alg, kid := hdr.Algorithm, hdr.KeyID

	// A token is valid only for the issuer its iss names (checkClaims
	// holds the verified iss to it), so only that issuer's keys are
	// tried: no other issuer's keys, however many it publishes, can make
	// a token cost more, and issuers that publish the same keys (tenants
	// of one provider) each sign their own tokens alone.
	iss, ok := claimedIssuer(jws.UnsafePayloadWithoutVerification())
	if !ok {
		return refused(ReasonMalformed, errors.New("claims are not a JSON object"))
	}
	is := v.byName[iss]
	if is == nil {
		return refused(ReasonIssuer, errors.New("iss "+iss))
	}
	if v.stale(is, now) {
		// A fetch now may confirm the keys; it is bounded as an unknown
		// kid's is, so stale_keys cannot make Deputy hammer a provider
		// that is down.
		v.refreshOnMiss(ctx, is)
		if now = v.clock(); v.stale(is, now) {
			return refused(ReasonStaleKeys, fmt.Errorf("key set not fetched for %s (identity.max_key_age %s)",
				now.Sub(v.loadedAt(is)).Round(time.Second), v.maxKeyAge))
		}
		idx = v.index.Load()
	}
	keys, known := idx.keysOf(is, kid)
	if !known {
		v.refreshOnMiss(ctx, is)
		idx = v.index.Load()
		if keys, known = idx.keysOf(is, kid); !known {
			return refused(ReasonUnknownKid, errors.New("kid "+kid))
		}
	}
	payload, err := v.signedBy(jws, alg, keys)
	if errors.Is(err, errNoKey) && kid == "" {
		// An issuer that signs without kids rotates unseen: a token of
		// its new key names nothing unknown. So it is refreshed as for
		// an unknown kid, under the same rate bound, before the refusal.
		v.refreshOnMiss(ctx, is)
		if fresh := v.index.Load(); fresh != idx {
			idx = fresh
			keys, _ = idx.keysOf(is, "")
			payload, err = v.signedBy(jws, alg, keys)
		}
		if errors.Is(err, errNoKey) {
			err = &noKidNoKey{retry: v.nextMissOf(is)}
		}
	}
	switch {
	case errors.Is(err, errAmbiguous):
		return refused(ReasonAmbiguousKey, err)
	case err != nil:
		return refused(ReasonBadSignature, err)
	}

	// Numbers stay as written (json.Number): a numeric id must not be
	// rounded into someone else's, and policies see claims exactly.
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims == nil || dec.More() {
		return refused(ReasonMalformed, errors.New("claims are not a JSON object"))
	}
	// A key given twice reads as its last value here and as its first to
	// other parsers (the upstream's, if it reads the token itself): such a
	// token says two things, so it says nothing. So does one given again
	// in another case ("SUB", "ſub"), which an upstream decoding claims
	// into a struct reads as the key, and a key holding NUL, which one
	// reading names as C strings ends there (strictjson.CheckUntyped).
	// Verdicts are remembered, so this walk runs once per token.
	if p, bad := strictjson.CheckUntyped(payload); bad {
		return refused(ReasonMalformed, fmt.Errorf("claims: %s: %s", p.Field, p.Message))
	}
	exp, err := v.checkClaims(claims, is, now)
	if err != nil {
		return nil, time.Time{}, idx, err
	}
	if delegated(claims) {
		// Deputy reads one person from a token. A delegated one names two,
		// and read as its sub alone it would have the subject act for
		// themselves: the actor would be dropped from the input, the
		// headers and every record.
		return refused(ReasonDelegatedToken, errors.New("act claim: the token is delegated, and Deputy does not read delegated tokens as identities"))
	}
	id, err := is.claims.identity(claims)
	if err != nil {
		return refused(ReasonMalformed, err)
	}
	if id.Subject == "" {
		return refused(ReasonMissingSub, nil)
	}
	// These become state keys, headers, log lines and event fields: one
	// holding a control character (a line break, a terminal escape, a bidi
	// override) is refused rather than relayed. The name is stripped instead (claims.go).
	for _, f := range [...]struct{ claim, value string }{{"sub", id.Subject}, {"org", id.Org}, {"domain", id.Domain}, {"email", id.Email}} {
		if strings.ContainsFunc(f.value, sidecar.IsControl) {
			return refused(ReasonMalformed, fmt.Errorf("%s holds a control character", f.claim))
		}
		// Every HTTP parser strips white space around a header value (RFC
		// 9110 5.5), and many applications trim what they read: a sub of
		// " partner:mallory" or "alice " would reach the application as
		// another issuer's person, or another person, than Deputy decided
		// for. Format characters (U+FEFF, zero-width spaces and joiners,
		// the word joiner) go too: JavaScript's trim() strips U+FEFF, and
		// others print as nothing in the tools that show a name.
		if f.value != strings.TrimFunc(f.value, trimmed) {
			return refused(ReasonMalformed, fmt.Errorf("%s begins or ends with white space or a format character", f.claim))
		}
	}
	if err := is.namespace(id); err != nil {
		return refused(ReasonReservedNamespace, err)
	}
	id.Issuer = is.name
	id.ExpiresAt = exp
	id.Claims = claims
	return id, exp, idx, nil
}

// checkHeader holds a token's protected header, which go-jose parsed, to
// the claims' rules. go-jose refuses a key given twice, but takes "ALG" or
// "Kid" beside "alg" or "kid" as other keys, which an upstream decoding
// the header into a struct in any case reads as the algorithm or the key
// (strictjson.CheckUntyped). And it takes "crit": [], which RFC 7515
// 4.1.11 forbids: crit, when present, is a list of at least one name.
func checkHeader(token string) error {
	seg, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if p, bad := strictjson.CheckUntyped(raw); bad {
		return fmt.Errorf("header: %s: %s", p.Field, p.Message)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if c, ok := h["crit"]; ok {
		var names []string
		if err := json.Unmarshal(c, &names); err != nil || len(names) == 0 {
			return errors.New("header: crit is not a list of at least one name")
		}
	}
	return nil
}

// delegated reports whether claims name an actor: an act claim, in any
// case, since an upstream decoding claims into a struct reads "ACT" or
// "Act" as act (strings.EqualFold is encoding/json's folding).
func delegated(claims map[string]any) bool {
	for k := range claims {
		if strings.EqualFold(k, "act") {
			return true
		}
	}
	return false
}

// trimmed reports whether r is white space or a format character
// (Unicode Cf), which applications may trim from a name's ends.
func trimmed(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) }

// namespace reads id's sub, org and domain in is's namespace and keeps
// only the roles and privileges is may assert; for the issuer without
// one, it refuses names spelled in another issuer's. An absent org or
// domain stays absent. A single issuer without a namespace does nothing
// here.
func (is *issuer) namespace(id *sidecar.Identity) error {
	names := [...]*string{&id.Subject, &id.Org, &id.Domain}
	if is.prefix != "" {
		for _, n := range names {
			if *n != "" {
				*n = is.prefix + *n
			}
		}
		id.Roles = allowed(id.Roles, is.roles)
		id.Privileges = allowed(id.Privileges, is.privileges)
		return nil
	}
	for _, n := range names {
		for _, p := range is.reserved {
			if mayReadAs(*n, p) {
				return fmt.Errorf("%q is in the namespace %q of another issuer", *n, strings.TrimSuffix(p, ":"))
			}
		}
	}
	return nil
}

// mayReadAs reports whether some case-insensitive reading of name may
// begin with the reserved prefix p (ASCII, lower case: namespaces are
// ASCII tokens). A case-insensitive upstream reads PARTNER:mallory as
// partner:mallory. Beyond ASCII, readings disagree: Go's strings.EqualFold
// and Unicode simple folding read U+017F (long s) as s and U+212A (Kelvin)
// as k; Java's equalsIgnoreCase also reads U+0131 and U+0130 as i; full
// folding (ICU, Python's casefold) reads U+FB00 as ff and U+00DF as ss;
// accent-insensitive collations (MySQL's default utf8mb4_0900_ai_ci) read
// U+015F as s and skip U+00AD altogether. No fold table follows every
// upstream, so a non-ASCII character where the name still spells p so
// far counts as spelling it: the name is refused (control characters are
// refused before). Under every one of them an ASCII character reads as one
// character, never as another ASCII letter than itself in either case:
// up to the first non-ASCII character, positions line up with p, and a
// name that differs from p there in more than letter case is free under
// every reading.
func mayReadAs(name, p string) bool {
	for i := 0; i < len(p); i++ {
		if i == len(name) {
			return false
		}
		c := name[i]
		if c >= utf8.RuneSelf {
			return true
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

// allowed keeps the names of list that ok holds, in place: list is the
// identity's own, freshly read from the claims.
func allowed(list []string, ok map[string]bool) []string {
	kept := list[:0]
	for _, s := range list {
		if ok[s] {
			kept = append(kept, s)
		}
	}
	return kept
}

// claimedIssuer reads the iss claim of a token not verified yet, as the
// claims are read once it is (the last of a repeated key; strictjson
// refuses the repetition then): "" when it is absent or not a string. ok is
// false when the claims are not a JSON object.
func claimedIssuer(payload []byte) (iss string, ok bool) {
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return "", false
	}
	if raw, found := claims["iss"]; found && json.Unmarshal(raw, &iss) != nil {
		return "", true
	}
	return iss, true
}

// signedBy returns the payload of jws if one of keys, those fit for alg,
// verifies it: errNoKey when none does, errAmbiguous, untried, when more
// than MaxKeysPerToken fit.
func (v *Verifier) signedBy(jws *jose.JSONWebSignature, alg string, keys []*jose.JSONWebKey) ([]byte, error) {
	n := 0
	for _, k := range keys {
		if fits(k, alg) {
			n++
		}
	}
	if n > MaxKeysPerToken {
		return nil, errAmbiguous
	}
	for _, k := range keys {
		if !fits(k, alg) {
			continue
		}
		v.sigChecks.Add(1)
		if p, err := jws.Verify(k); err == nil {
			return p, nil
		}
	}
	return nil, errNoKey
}

// fits reports whether k can verify a signature of alg: its alg, when it
// names one, is alg, and its type and curve are alg's. A key that does not
// fit would fail the check anyway, and must not count towards
// MaxKeysPerToken.
func fits(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func (v *Verifier) checkClaims(claims map[string]any, is *issuer, now time.Time) (time.Time, error) {
	if iss, _ := claims["iss"].(string); iss != is.name {
		return time.Time{}, unauthorized(ReasonIssuer, errors.New("iss "+iss))
	}
	if len(is.audiences) > 0 && !audienceMatches(claims["aud"], is.audiences) {
		return time.Time{}, unauthorized(ReasonAudience, nil)
	}
	raw, ok := claims["exp"]
	if !ok {
		return time.Time{}, unauthorized(ReasonMissingExp, nil)
	}
	exp, ok := numericDate(raw)
	if !ok {
		return time.Time{}, unauthorized(ReasonMalformed, errors.New("exp is not a number"))
	}
	if !now.Before(exp.Add(v.leeway)) {
		return time.Time{}, unauthorized(ReasonExpired, nil)
	}
	for _, name := range [...]string{"nbf", "iat"} {
		raw, ok := claims[name]
		if !ok {
			continue
		}
		t, ok := numericDate(raw)
		if !ok {
			return time.Time{}, unauthorized(ReasonMalformed, errors.New(name+" is not a number"))
		}
		if now.Add(v.leeway).Before(t) {
			return time.Time{}, unauthorized(ReasonNotYetValid, errors.New(name+" in the future"))
		}
	}
	return exp, nil
}

func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func audienceMatches(aud any, want []string) bool {
	switch a := aud.(type) {
	case string:
		for _, w := range want {
			if a == w {
				return true
			}
		}
	case []any:
		for _, x := range a {
			s, _ := x.(string)
			for _, w := range want {
				if s == w {
					return true
				}
			}
		}
	}
	return false
}
