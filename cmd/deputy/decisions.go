package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis"
)

func newDecisionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "decisions",
		Short: "Read Deputy's decision log",
	}
	cmd.AddCommand(newDecisionsTailCmd())
	return cmd
}

func newDecisionsTailCmd() *cobra.Command {
	var (
		opt    decisionlog.TailOptions
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow decisions as they are logged to the Redis stream",
		Long: `Follow the decision log stream (XREAD BLOCK) and print one line per
decision, or the records as JSON lines with --json. Filters combine.

Redis is reached with serve's settings, by the same flags, DEPUTY_REDIS_*
variables and --config file (Sentinel, Cluster, TLS, ACL user), and the
stream is serve's decision_log.stream.

With --from (history) and --limit, tail returns at the end of the stream
instead of waiting for new decisions.`,
		Example: `  deputy decisions tail --redis-addrs 127.0.0.1:6379 --result deny
  deputy decisions tail --config deputy.yaml --mode impersonation --actor staff-17 --json
  deputy decisions tail --redis-addrs 127.0.0.1:6379 --from 0 --limit 50`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	loader := newConfigLoader(f, "redis", "decision_log.stream")
	// The names tail used before it shared serve's settings.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "redis-addr":
			name = "redis-addrs"
		case "redis-master":
			name = "redis-master-name"
		case "stream":
			name = "decision-log-stream"
		}
		return pflag.NormalizedName(name)
	})
	f.StringVar(&opt.From, "from", "$", `start after this entry id: "$" for new decisions, "0" for the whole stream`)
	f.StringVar(&opt.Filter.Actor, "actor", "", "only decisions by this actor")
	f.StringVar(&opt.Filter.Subject, "subject", "", "only decisions acting for this subject")
	f.StringVar(&opt.Filter.Result, "result", "", "only allow or deny")
	f.StringVar(&opt.Filter.Mode, "mode", "", "only impersonation, partner, reseller, or none")
	f.BoolVar(&asJSON, "json", false, "print records as JSON lines")
	f.IntVar(&limit, "limit", 0, "stop after this many decisions (0: no limit); with --from, also at the end of the stream")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := opt.Filter.Validate(); err != nil {
			return err
		}
		if limit < 0 {
			return sidecar.Invalid("limit", "must not be negative")
		}
		cfg, err := loader.load()
		if err != nil {
			return err
		}
		if !cfg.Redis.Enabled() {
			return sidecar.Invalid("redis.addrs", "decisions are read from Redis: set --redis-addrs, DEPUTY_REDIS_ADDRS or redis.addrs in --config")
		}
		client, err := redis.NewClient(cfg.Redis)
		if err != nil {
			return err
		}
		defer client.Close()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := client.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis %v: %w", cfg.Redis.Addrs, err)
		}
		opt.Stream = cfg.DecisionLog.Stream
		opt.StopAtEnd = limit > 0 && opt.From != "$"
		opt.OnError = func(err error) {
			fmt.Fprintf(cmd.ErrOrStderr(), "deputy: redis unreachable, retrying: %v\n", err)
		}
		out := cmd.OutOrStdout()
		n := 0
		errDone := errors.New("limit reached")
		err = decisionlog.Tail(ctx, client, opt, func(_ string, r *decisionlog.Record) error {
			if asJSON {
				line, err := decisionlog.JSONLine(r)
				if err != nil {
					return err
				}
				if _, err := out.Write(line); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintln(out, decisionlog.FormatLine(r)); err != nil {
				return err
			}
			n++
			if limit > 0 && n >= limit {
				return errDone
			}
			return nil
		})
		if errors.Is(err, errDone) {
			return nil
		}
		return err
	}
	return cmd
}
