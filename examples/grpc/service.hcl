# examples/grpc — a gRPC service (Knative's grpc-ping-go): plain h2c on $PORT, readiness by
# grpc.health.v1.Health/Check. Build it with go build -o bin/grpc-ping ./examples/grpc, then
# rouse apply -f examples/grpc/service.hcl -var bin=$PWD/bin
variable "bin" {
  description = "Absolute path of the folder holding the built grpc-ping binary."
  type        = string
}

service "grpc-ping" {
  namespace = "default"
  driver    = "raw_exec"
  command   = "${var.bin}/grpc-ping"
  protocol  = "h2c"

  resources {
    cpu    = 100
    memory = 64
  }

  readiness { type = "grpc" }

  autoscaling {
    min                 = 0
    max                 = 10
    scale_to_zero_grace = "30s"
  }
}
