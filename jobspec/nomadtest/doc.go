// Package nomadtest holds jobspec's tests against real Nomad and Consul agents. They live
// apart from package jobspec so that its unit tests and fuzzing (whose worker processes
// each run TestMain) do not start a cluster; `go test ./jobspec/...` runs both.
package nomadtest
