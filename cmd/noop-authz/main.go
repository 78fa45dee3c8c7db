// Command noop-authz is a do-nothing ext_authz gRPC server that allows
// every request. `make bench` measures Deputy against it in the same run:
// its throughput is the ceiling the machine and load tool allow. With
// -answer it gives every check one fixed answer instead of an empty one
// (`make bench` hands it an answer Deputy gave), which shows what the
// answer alone costs the caller.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"
)

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
	answer *authv3.CheckResponse // when set, every check's answer
}

func (a allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if a.answer != nil {
		return a.answer, nil
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9292", "listen address")
	answerFile := flag.String("answer", "", "a CheckResponse in protobuf JSON to give every check (empty: an empty allow)")
	flag.Parse()
	var srv allowAll
	if *answerFile != "" {
		raw, err := os.ReadFile(*answerFile)
		if err != nil {
			log.Fatal(err)
		}
		srv.answer = &authv3.CheckResponse{}
		if err := protojson.Unmarshal(raw, srv.answer); err != nil {
			log.Fatalf("%s: %v", *answerFile, err)
		}
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, srv)
	reflection.Register(s)
	log.Printf("noop-authz on %s", lis.Addr())
	log.Fatal(s.Serve(lis))
}
