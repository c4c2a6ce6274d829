package http1

// ChunkScanner follows the chunked coding (RFC 9112 §7.1) across reads. It never buffers:
// Next says how many of the bytes given belong to the message and whether they are
// chunk data, so a relay can pass the coding through unchanged (or keep only the data).
// It is strict where the RFC lets a recipient be lenient, and never more lenient than Go's
// net/http: CRLF only (no bare LF or CR), at most 15 hex digits, no whitespace after the
// size, extensions and trailer fields of visible bytes only, a size line and the trailer
// section each under 4 000 bytes.
type ChunkScanner struct {
	state    uint8
	digits   uint8
	size     int64
	lineN    int // bytes of the current size line
	trailerN int // bytes of the trailer section
}

const (
	csSize uint8 = iota
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailerName
	csTrailerValue
	csTrailerLF
	csEndLF
	csDone
)

// maxChunkLine bounds a size line (with its extensions) and the whole trailer section:
// Go's net/http refuses a chunk line of 4 KiB and a trailer section that does not fit its
// 4 KiB read buffer.
const maxChunkLine = 4000

// Done reports whether the message's last byte was consumed.
func (s *ChunkScanner) Done() bool { return s.state == csDone }

// Next consumes a prefix of b: n bytes, all chunk data (data true) or all framing.
// At the end of the message it stops there (Done is then true): the bytes after n are
// not part of it. ErrBadChunk on malformed framing.
func (s *ChunkScanner) Next(b []byte) (n int, data bool, err error) {
	if s.state == csData {
		k := int(min(int64(len(b)), s.size))
		s.size -= int64(k)
		if s.size == 0 {
			s.state = csDataCR
		}
		return k, true, nil
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch s.state {
		case csSize:
			s.lineN++
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if s.digits++; s.digits > 15 {
					return i, false, ErrBadChunk
				}
				s.size = s.size<<4 | int64(unhex(c))
			case s.digits == 0:
				return i, false, ErrBadChunk
			case c == ';':
				s.state = csExt
			case c == '\r':
				s.state = csSizeLF
			default: // whitespace too: RFC 9112 allows BWS before ';', net/http does not
				return i, false, ErrBadChunk
			}
		case csExt:
			if s.lineN++; s.lineN > maxChunkLine {
				return i, false, ErrBadChunk
			}
			switch {
			case c == '\r':
				s.state = csSizeLF
			case (c < ' ' && c != '\t') || c == 0x7f:
				return i, false, ErrBadChunk
			}
		case csSizeLF:
			if c != '\n' {
				return i, false, ErrBadChunk
			}
			s.digits, s.lineN = 0, 0
			if s.size == 0 {
				s.state = csTrailerStart
			} else {
				s.state = csData
				return i + 1, false, nil
			}
		case csDataCR:
			if c != '\r' {
				return i, false, ErrBadChunk
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return i, false, ErrBadChunk
			}
			s.state = csSize
		case csTrailerStart:
			switch {
			case c == '\r':
				s.state = csEndLF
			case tchar[c]:
				s.state = csTrailerName
			default:
				return i, false, ErrBadChunk
			}
		case csTrailerName:
			if s.trailerN++; s.trailerN > maxChunkLine {
				return i, false, ErrBadChunk
			}
			switch {
			case c == ':':
				s.state = csTrailerValue
			case !tchar[c]:
				return i, false, ErrBadChunk
			}
		case csTrailerValue:
			if s.trailerN++; s.trailerN > maxChunkLine {
				return i, false, ErrBadChunk
			}
			switch {
			case c == '\r':
				s.state = csTrailerLF
			case (c < ' ' && c != '\t') || c == 0x7f:
				return i, false, ErrBadChunk
			}
		case csTrailerLF:
			if c != '\n' {
				return i, false, ErrBadChunk
			}
			s.state = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return i, false, ErrBadChunk
			}
			s.state = csDone
			return i + 1, false, nil
		case csDone:
			return i, false, nil
		}
	}
	return len(b), false, nil
}

// Scan consumes b through Next and returns how many bytes belong to the message (all
// of b unless it ended inside b).
func (s *ChunkScanner) Scan(b []byte) (int, error) {
	total := 0
	for total < len(b) && !s.Done() {
		n, _, err := s.Next(b[total:])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
