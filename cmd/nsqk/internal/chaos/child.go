package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nsqk/nsqk/shared/bridgecmd"
)

// ChildEnv, set to "bridge", makes a test binary that calls RunChildIfAsked from TestMain run the
// bridge program instead of its tests (the re-exec trick for the process cases).
const ChildEnv = "NSQKCHAOS_CHILD"

// RunChildIfAsked runs the bridge program with the process arguments and exits, when ChildEnv
// says so; otherwise it returns. Call it first thing in TestMain.
func RunChildIfAsked() {
	if os.Getenv(ChildEnv) != "bridge" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bridgecmd.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// TestBinaryLauncher re-executes the running test binary as the bridge program.
func TestBinaryLauncher() Launcher {
	exe := os.Args[0]
	return func(args []string) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), ChildEnv+"=bridge")
		return cmd
	}
}

// ExecutableLauncher runs `<this executable> bridge <args>`: for the nsqk CLI. It runs a copy of
// the executable pinned in dir, so that rebuilding bin/nsqk during a run cannot change the bridge
// under test; remove the copy with the returned function.
func ExecutableLauncher(dir string) (Launcher, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	pinned := filepath.Join(dir, fmt.Sprintf(".nsqk-under-test-%d", os.Getpid()))
	if err := copyFile(exe, pinned); err != nil {
		return nil, nil, fmt.Errorf("pin the executable: %w", err)
	}
	return func(args []string) *exec.Cmd {
		return exec.Command(pinned, append([]string{"bridge"}, args...)...)
	}, func() { os.Remove(pinned) }, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
