// Command saslpasswd sets a user's password in a virtrpc SASL credential
// file (transport/sasl's FileStore), as saslpasswd2 does for a sasldb. The
// file keeps SCRAM-SHA-256 verifiers, never the password.
//
//	echo -n secret123 | go run ./examples/saslpasswd -f users.scram fred
//
// The password is read from standard input (its first line, without the
// line end); the file is created with mode 0600 if it does not exist.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

func main() {
	file := flag.String("f", "", "credential file (required)")
	iters := flag.Int("i", sasl.MinIterations, "PBKDF2 iterations (4096 to 1048576)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: saslpasswd -f FILE [-i N] USER < password\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *file == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*file, flag.Arg(0), *iters, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "saslpasswd:", err)
		os.Exit(1)
	}
}

func run(file, user string, iters int, in io.Reader) error {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the password: %w", err)
	}
	pass := strings.TrimRight(line, "\r\n")
	if pass == "" {
		return fmt.Errorf("empty password on standard input")
	}
	return sasl.AddUserToFile(file, user, pass, iters)
}
