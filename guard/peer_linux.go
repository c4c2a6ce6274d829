package guard

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the gateway has already closed (or reset) its end: one
// zero-timeout poll for POLLRDHUP, which unlike a peek sees the close behind a request
// still in the buffer.
func peerClosed(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			closed = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return closed
}
