# The smallest spec: a program run with raw_exec, everything else defaulted.
service "hello" {
  command = "/usr/local/bin/hello"
}
