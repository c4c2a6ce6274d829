service "multi" {
  command = "/usr/local/bin/hello"
  env     = { TARGET = var.target }
  readiness {
    path = "/healthz"
  }
}
