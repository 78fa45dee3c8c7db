package authz

// StorefrontRequest is what Envoy sends for a browser page view: 15
// headers. The benchmarks of both test packages convert and check it.
const StorefrontRequest = `{"attributes":{
  "source":{"address":{"socketAddress":{"address":"10.0.3.17","portValue":51234}}},
  "destination":{"address":{"socketAddress":{"address":"10.0.0.5","portValue":8080}}},
  "request":{"time":"2026-11-22T10:00:00.123Z","http":{
    "id":"8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a","method":"GET","path":"/catalog/shoes?size=42&color=red",
    "host":"shop.example.com","scheme":"https","protocol":"HTTP/2",
    "headers":{
      ":authority":"shop.example.com",":method":"GET",":path":"/catalog/shoes?size=42&color=red",":scheme":"https",
      "accept":"text/html,application/xhtml+xml","accept-encoding":"gzip, deflate, br","accept-language":"en-GB,en;q=0.9",
      "cookie":"cart=abc123; theme=dark","user-agent":"Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
      "x-forwarded-for":"203.0.113.9","x-forwarded-proto":"https","x-request-id":"8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a",
      "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","sec-fetch-mode":"navigate",
      "x-envoy-expected-rq-timeout-ms":"15000"}}}}}`
