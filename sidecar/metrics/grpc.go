package metrics

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCMetrics are the gRPC server metrics, under the names, labels and
// meanings of go-grpc-middleware's Prometheus provider (grpc_server_*),
// which dashboards and alert rules read. Every check is one unary call,
// so each method's series are resolved once, not per call: the
// provider's WithLabelValues on five vectors per call cost more than the
// rest of the metrics of a check together.
type GRPCMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	handling                         *prometheus.HistogramVec
	// methods holds at most maxMethods full method names, then one
	// otherMethods key per call type → *methodSeries.
	methods sync.Map
	named   atomic.Int32 // full method names in methods
}

// otherMethods keys the series of the methods past maxMethods, by call
// type.
type otherMethods string

// methodSeries are one method's series; handled is indexed by status code.
type methodSeries struct {
	started, received, sent prometheus.Counter
	handling                prometheus.Observer
	handled                 [numCodes]prometheus.Counter
	handledVec              *prometheus.CounterVec
	labels                  [3]string
}

// numCodes covers every status code gRPC defines (OK through
// Unauthenticated); another code is looked up per call.
const numCodes = int(codes.Unauthenticated) + 1

// gRPC call types, the grpc_type label.
const (
	grpcUnary        = "unary"
	grpcClientStream = "client_stream"
	grpcServerStream = "server_stream"
	grpcBidiStream   = "bidi_stream"
)

func newGRPCMetrics() *GRPCMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	return &GRPCMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: LatencyBuckets,
		}, labels),
	}
}

func (g *GRPCMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.started, g.handled, g.received, g.sent, g.handling}
}

// series returns the series of fullMethod ("/package.Service/Method"),
// resolving them on first use. The gRPC server runs interceptors only for
// the methods it registered, unless it has an unknown-service handler:
// then the client names the method, so past maxMethods names methods are
// counted under service and method Other, and nothing is kept per name.
func (g *GRPCMetrics) series(fullMethod, typ string) *methodSeries {
	if s, ok := g.methods.Load(fullMethod); ok {
		return s.(*methodSeries)
	}
	var key any = fullMethod
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if g.named.Add(1) > maxMethods {
		g.named.Add(-1)
		key, service, method = otherMethods(typ), Other, Other
		if s, ok := g.methods.Load(key); ok {
			return s.(*methodSeries)
		}
	}
	s := &methodSeries{
		started:    g.started.WithLabelValues(typ, service, method),
		received:   g.received.WithLabelValues(typ, service, method),
		sent:       g.sent.WithLabelValues(typ, service, method),
		handling:   g.handling.WithLabelValues(typ, service, method),
		handledVec: g.handled,
		labels:     [3]string{typ, service, method},
	}
	for c := range s.handled {
		s.handled[c] = g.handled.WithLabelValues(typ, service, method, codes.Code(c).String())
	}
	actual, loaded := g.methods.LoadOrStore(key, s)
	if loaded && key == any(fullMethod) {
		g.named.Add(-1) // another call kept it first
	}
	return actual.(*methodSeries)
}

// done counts a finished call with its status and duration.
func (s *methodSeries) done(err error, start time.Time) {
	code := codeOf(err)
	if int(code) < numCodes {
		s.handled[code].Inc()
	} else {
		s.handledVec.WithLabelValues(s.labels[0], s.labels[1], s.labels[2], code.String()).Inc()
	}
	s.handling.Observe(time.Since(start).Seconds())
}

// codeOf is the status a call ends with, context errors mapped as the
// gRPC server maps them.
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

// InitializeMetrics exports every registered method's series at zero, so
// rates and alerts have a series before the first call.
func (g *GRPCMetrics) InitializeMetrics(srv *grpc.Server) {
	for service, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			g.series("/"+service+"/"+m.Name, callType(m.IsClientStream, m.IsServerStream))
		}
	}
}

func callType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return grpcBidiStream
	case clientStream:
		return grpcClientStream
	case serverStream:
		return grpcServerStream
	}
	return grpcUnary
}

// UnaryServerInterceptor counts unary calls: started, one message
// received, one sent unless the handler failed, handled by code, and the
// handling time.
func (g *GRPCMetrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		s := g.series(info.FullMethod, grpcUnary)
		start := time.Now()
		s.started.Inc()
		s.received.Inc()
		resp, err := handler(ctx, req)
		if err == nil {
			s.sent.Inc()
		}
		s.done(err, start)
		return resp, err
	}
}

// StreamServerInterceptor counts streaming calls and their messages.
func (g *GRPCMetrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		s := g.series(info.FullMethod, callType(info.IsClientStream, info.IsServerStream))
		start := time.Now()
		s.started.Inc()
		err := handler(srv, &countedStream{ServerStream: ss, s: s})
		s.done(err, start)
		return err
	}
}

// countedStream counts the messages a stream carries.
type countedStream struct {
	grpc.ServerStream
	s *methodSeries
}

func (c *countedStream) SendMsg(m any) error {
	err := c.ServerStream.SendMsg(m)
	if err == nil {
		c.s.sent.Inc()
	}
	return err
}

func (c *countedStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if err == nil {
		c.s.received.Inc()
	}
	return err
}
