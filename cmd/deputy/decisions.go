package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
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
		addrs    []string
		username string
		password string
		db       int
		master   string
		opt      = decisionlog.TailOptions{Stream: decisionlog.DefaultStream}
		asJSON   bool
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow decisions as they are logged to the Redis stream",
		Long: `Follow the decision log stream (XREAD BLOCK) and print one line per
decision, or the records as JSON lines with --json. Filters combine.`,
		Example: `  deputy decisions tail --redis-addr 127.0.0.1:6379 --result deny
  deputy decisions tail --mode impersonation --actor staff-17 --json
  deputy decisions tail --from 0 --limit 50`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opt.Filter.Validate(); err != nil {
				return err
			}
			if password == "" {
				password = os.Getenv("DEPUTY_REDIS_PASSWORD")
			}
			client := redis.NewUniversalClient(&redis.UniversalOptions{
				Addrs: addrs, Username: username, Password: password, DB: db, MasterName: master,
			})
			defer client.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := client.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis %v: %w", addrs, err)
			}
			opt.OnError = func(err error) {
				fmt.Fprintf(cmd.ErrOrStderr(), "deputy: redis unreachable, retrying: %v\n", err)
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			n := 0
			errDone := fmt.Errorf("limit reached")
			err := decisionlog.Tail(ctx, client, opt, func(_ string, r *decisionlog.Record) error {
				if asJSON {
					if err := enc.Encode(r); err != nil {
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
			if err == errDone {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&addrs, "redis-addr", []string{"127.0.0.1:6379"}, "Redis address (repeat for Cluster or Sentinel)")
	f.StringVar(&username, "redis-username", "", "Redis ACL user")
	f.StringVar(&password, "redis-password", "", "Redis password (default $DEPUTY_REDIS_PASSWORD)")
	f.IntVar(&db, "redis-db", 0, "Redis database")
	f.StringVar(&master, "redis-master", "", "Sentinel master name")
	f.StringVar(&opt.Stream, "stream", decisionlog.DefaultStream, "decision log stream")
	f.StringVar(&opt.From, "from", "$", `start after this entry id: "$" for new decisions, "0" for the whole stream`)
	f.StringVar(&opt.Filter.Actor, "actor", "", "only decisions by this actor")
	f.StringVar(&opt.Filter.Subject, "subject", "", "only decisions acting for this subject")
	f.StringVar(&opt.Filter.Result, "result", "", "only allow or deny")
	f.StringVar(&opt.Filter.Mode, "mode", "", "only impersonation, partner, reseller, or none")
	f.BoolVar(&asJSON, "json", false, "print records as JSON lines")
	f.IntVar(&limit, "limit", 0, "stop after this many decisions (0 follows until interrupted)")
	return cmd
}
