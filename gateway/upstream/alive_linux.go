package upstream

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether an idle connection can carry a new request: nothing has arrived
// on it since its last response (bytes an instance sent after a response's end would be
// read as the next request's response) and the instance has not closed it. One
// non-blocking peek, so a reused connection costs one syscall more than a fresh one saves.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	good := false
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		good = errors.Is(err, syscall.EAGAIN) // no byte, no EOF, no error
		return true
	})
	return good && err == nil
}
