package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// newEngine is the policy engine of `deputy serve` and `deputy eval`: the
// configured decision query and the manage query prepared, and a set that
// fails an activation check refused before it serves, whichever way it
// comes (start, reload, bundle file or server, watched directory).
func newEngine(cfg policy.Config, log *slog.Logger, opts ...policy.Option) *policy.Engine {
	return policy.New(append([]policy.Option{
		policy.WithQueries(cfg.DecisionQuery, policy.DefaultManageQuery),
		policy.WithLogger(log),
		policy.WithAllowedBuiltins(cfg.AllowBuiltins...),
	}, append(activationChecks(cfg), opts...)...)...)
}

// servable compiles set as `deputy serve` configured with query would
// activate it, running every activation check, without serving it: the
// offline tools (policy check, bundle build and verify) judge a set by
// the same list as serve.
func servable(ctx context.Context, query string, allow []string, set *policy.Set) error {
	q, err := policy.DecisionRef(query)
	if err != nil {
		return err
	}
	_, err = newEngine(policy.Config{DecisionQuery: q, AllowBuiltins: allow}, slog.New(slog.DiscardHandler)).Compile(ctx, set)
	return err
}

// decisionQueryFlag is the --decision-query of the offline tools: the
// policy.decision_query of the Deputy that would serve the set.
func decisionQueryFlag(cmd *cobra.Command, q *string) {
	cmd.Flags().StringVar(q, "decision-query", policy.DefaultDecisionQuery, "policy.decision_query of the serving Deputy: data.a.b.c, or OPA-Envoy's a/b/c")
}

// allowBuiltinsFlag is the --allow-builtins of the offline tools: the
// policy.allow_builtins of the Deputy that would serve the set, so they
// refuse the built-ins it refuses.
func allowBuiltinsFlag(cmd *cobra.Command, allow *[]string) {
	cmd.Flags().StringSliceVar(allow, "allow-builtins", nil, "policy.allow_builtins of the serving Deputy: refused built-ins ("+strings.Join(policy.RefusedBuiltins(), ", ")+") the policies may call anyway")
}

// activationChecks are the checks every set passes before it serves:
// policy data Deputy would read otherwise than meant (authz.CheckData),
// a decision query no rule answers (a bundle without its modules would
// deny every request), management rules a reload would take away, and
// mask rules that cannot run, which would log
// credentials or drop every record's input (decisionlog.ValidateMask).
func activationChecks(cfg policy.Config) []policy.Option {
	return []policy.Option{
		policy.WithDataCheck(authz.CheckData),
		policy.WithActivationCheck(policy.RequireRules(cfg.DecisionQuery)),
		policy.WithKeptRules(policy.DefaultManageQuery),
		policy.WithActivationCheck(func(ctx context.Context, a *policy.Activation) error {
			return decisionlog.ValidateMask(ctx, a)
		}),
	}
}

// checkFacts are the config switches policies read in input.deputy (the
// pipeline adds the serving revision and dry_run).
func checkFacts(cfg *Config) map[string]any {
	return map[string]any{
		"dev":          cfg.Dev,
		"parse_body":   *cfg.Check.ParseBody,
		"owned_prefix": cfg.Check.OwnedPrefix,
	}
}

// checkOptions shape the check pipeline from the config. `deputy serve`
// and `deputy eval` both build their pipeline with them, so the same
// config and policies decide a request alike in both.
func checkOptions(cfg *Config) []authz.Option {
	return []authz.Option{
		authz.WithQuery(cfg.Policy.DecisionQuery),
		authz.WithOwnedPrefix(cfg.Check.OwnedPrefix),
		authz.WithActorTokenHeader(cfg.Check.ActorTokenHeader),
		authz.WithOnBehalfOfHeader(cfg.Partner.OnBehalfOfHeader),
		authz.WithErrorStatus(cfg.Check.ErrorStatus),
		authz.WithBodyParsing(*cfg.Check.ParseBody),
		authz.WithBareQuery(cfg.Check.AllowBareQuery),
		authz.WithQueryRouteParams(cfg.Check.QueryRouteParams),
		authz.WithMaxPathSegments(cfg.Check.MaxPathSegments),
		authz.WithMaxRouteDirsBytes(cfg.Check.MaxRouteDirsBytes),
		authz.WithMethodOverrides(cfg.Check.MethodOverrides),
		authz.WithCredentialCarriers(cfg.Identity.CredentialCarriers),
		authz.WithIdentityHeader(cfg.Identity.Header),
		authz.WithDryRun(cfg.Policy.DryRun),
		authz.WithFacts(checkFacts(cfg)),
	}
}

// httpChecks are the HTTP check endpoints of the config: Envoy's
// http_service endpoint, and the forwarded endpoint at http.check_path
// for the proxy http.check_proxy names (nil with envoy). `deputy serve`
// mounts both and `deputy eval` decides a plain HTTP request on the
// first, so every http.* setting that shapes a check reaches both.
func httpChecks(cfg *Config, c envoy.HTTPChecker) (check, forwarded *envoy.HTTPHandler) {
	check = envoy.NewHTTPHandler(c, envoy.WithPathPrefix(cfg.HTTP.PathPrefix), envoy.WithMaxBody(cfg.HTTP.MaxBodyBytes),
		envoy.WithEnvoyUpstreamHeaders(cfg.HTTP.EnvoyUpstreamHeaders))
	if proxy := envoy.Proxy(cfg.HTTP.CheckProxy); proxy != envoy.ProxyEnvoy {
		forwarded = envoy.NewHTTPHandler(c, envoy.WithTrustedProxy(proxy), envoy.WithOwned(c.Owned), envoy.WithMaxBody(cfg.HTTP.MaxBodyBytes))
	}
	return check, forwarded
}
