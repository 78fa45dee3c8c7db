package api

// Endpoints lists "METHOD path" of every endpoint s serves, as registered.
func Endpoints(s *Server) []string { return s.endpoints }
