module github.com/nsqk/nsqk/cmd/nsqk/internal/bench/released

go 1.26.0

require github.com/nsqio/go-nsq v1.1.0

require github.com/golang/snappy v0.0.1 // indirect
