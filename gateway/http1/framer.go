package http1

// Framer follows a response body's framing over the bytes that arrive after its head,
// so a relay knows where the body ends. With Dechunk it also takes the chunked coding
// off: Data collects only the chunks' data (for a client that gets the body without the
// coding: HTTP/1.0, or HTTP/2, whose frames carry the length). Trailers of a chunked
// body are checked and dropped.
type Framer struct {
	body      Body
	remaining int64
	cs        ChunkScanner
	dechunk   bool
	// Data is the decoded part of what the last Part call consumed (with Dechunk); the
	// caller resets it.
	Data []byte
}

// Reset starts on the body of resp.
func (f *Framer) Reset(resp *Response, dechunk bool) {
	*f = Framer{body: resp.Body, remaining: resp.Length, dechunk: dechunk && resp.Body == Chunked, Data: f.Data[:0]}
}

// Dechunking reports whether Data carries the body (else b[:used] of each Part does).
func (f *Framer) Dechunking() bool { return f.dechunk }

// Part consumes the body's share of b: b[:used]. fin: the body ended within it. An error
// is a chunked coding that breaks the rules.
func (f *Framer) Part(b []byte) (used int, fin bool, err error) {
	switch f.body {
	case Chunked:
		if !f.dechunk {
			used, err = f.cs.Scan(b)
			return used, f.cs.Done(), err
		}
		for used < len(b) && !f.cs.Done() {
			k, data, err := f.cs.Next(b[used:])
			if err != nil {
				return used, false, err
			}
			if data {
				f.Data = append(f.Data, b[used:used+k]...)
			}
			used += k
		}
		return used, f.cs.Done(), nil
	case UntilClose:
		return len(b), false, nil
	case Length:
		k := int(min(int64(len(b)), f.remaining))
		f.remaining -= int64(k)
		return k, f.remaining == 0, nil
	}
	return 0, true, nil
}
