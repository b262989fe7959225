package localtest

import (
	"testing"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

func TestMain(m *testing.M) { Main(m) }

func TestSharedKinesisStartsOneEmulatorForThePackage(t *testing.T) {
	a := SharedKinesis(t, kinesislocal.Options{})
	b := SharedKinesis(t, kinesislocal.Options{})
	if a != b {
		t.Fatal("a second call started a second emulator")
	}
	kc := a.Client()
	s1, s2 := Stream(t, kc, 1), Stream(t, kc, 2)
	if s1 == s2 {
		t.Fatalf("two streams named %s", s1)
	}
}
