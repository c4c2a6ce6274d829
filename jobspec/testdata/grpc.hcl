# A gRPC server: the gateway speaks h2c to it, and readiness is the gRPC health check.
service "greeter" {
  image    = "ghcr.io/acme/greeter:1.0"
  port     = 50051
  protocol = "h2c"

  readiness {
    type     = "grpc"
    interval = "2s"
  }
}
