module github.com/nsqio/go-nsq

go 1.11

require github.com/golang/snappy v0.0.1
