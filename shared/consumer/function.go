package consumer

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nsqk/nsqk/shared/emf"
)

// Namespace is the EMF namespace of every consumer function.
const Namespace = "NSQK/Consumer"

// FunctionSetup is what every consumer function configures the same way: its metric dimension,
// where metrics and logs go, its checkpoint store, dead-letter queue, deadline margin and clock.
// A function's own Config embeds it; Main fills it from the environment.
type FunctionSetup struct {
	Name           string           // the Function metric dimension (in Lambda: AWS_LAMBDA_FUNCTION_NAME)
	Metrics        io.Writer        // EMF documents; default os.Stdout
	Logger         *slog.Logger     // default JSON on stderr
	Checkpoints    CheckpointStore  // default in memory
	DeadLetters    DeadLetterQueue  // where Permanent failures go; default none (they stop the batch)
	DeadlineMargin time.Duration    // default the processor's
	Now            func() time.Time // default time.Now
}

// Build fills the defaults and returns the function's processor for h, its EMF registry (where the
// function adds its own metrics) and its logger.
func (s FunctionSetup) Build(h Handler) (*Processor, *emf.Registry, *slog.Logger) {
	if s.Metrics == nil {
		s.Metrics = os.Stdout
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if s.Checkpoints == nil {
		s.Checkpoints = NewMemoryCheckpoints()
	}
	reg := emf.New(emf.Config{
		Namespace:  Namespace,
		Dimensions: []emf.Dimension{{Name: "Function", Value: s.Name}},
		Output:     s.Metrics,
		Now:        s.Now,
	})
	opts := []Option{WithLogger(s.Logger), WithCheckpointStore(s.Checkpoints), WithMetrics(reg, JSONMillisField("ts"))}
	if s.DeadLetters != nil {
		opts = append(opts, WithDeadLetterQueue(s.DeadLetters))
	}
	if s.DeadlineMargin > 0 {
		opts = append(opts, WithDeadlineMargin(s.DeadlineMargin))
	}
	if s.Now != nil {
		opts = append(opts, WithClock(s.Now))
	}
	return NewProcessor(h, opts...), reg, s.Logger
}
