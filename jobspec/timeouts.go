package jobspec

// timeouts decodes response_start_timeout and idle_timeout. (Being built: issue 20.)
func (d *decoder) timeouts(a body) {
	for _, n := range []string{"response_start_timeout", "idle_timeout"} {
		if a.has(n) {
			a.invalid(n, "%s is not supported yet.", n)
		}
	}
}
