package jobspec

// routing decodes visibility and tag_header_routing. (Being built: issue 20.)
func (d *decoder) routing(a body) {
	for _, n := range []string{"visibility", "tag_header_routing"} {
		if a.has(n) {
			a.invalid(n, "%s is not supported yet.", n)
		}
	}
}
