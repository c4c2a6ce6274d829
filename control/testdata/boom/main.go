// boom is a server that cannot start: it says why on stderr and exits 3 at once, as a
// service with a missing config does. The control tests run it as an image.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "boom: config missing")
	os.Exit(3)
}
