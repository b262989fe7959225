# nsqk: NSQ -> Kinesis bridge, per-shard Lambda consumers, CDK app.
# The first two commands on a fresh clone are `make dev` and `make test`.

SHELL        := /bin/bash
GO           ?= go
NODE_TOOLS   := _tools
NODE_MODULES := $(NODE_TOOLS)/node_modules/.installed
BIN          := bin
# The CDK tests (infra/) run without -race: jsii drives a node process and is not goroutine-safe,
# so there is nothing for the race detector to find there, only a slower build.
GO_PKGS      := $(shell $(GO) list ./... 2>/dev/null | grep -v '/infra')
INFRA_PKGS   := $(shell $(GO) list ./infra/... 2>/dev/null)

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_HOME := $(CURDIR)/.cdk
export CDK_DISABLE_VERSION_CHECK := true

.PHONY: help dev test test-short build lambda synth bench chaos fmt vet tools invoke clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

tools: $(NODE_MODULES) ## install the pinned Node tooling (kinesalite, kinesis-local, aws-cdk)

$(NODE_MODULES): $(NODE_TOOLS)/package.json $(NODE_TOOLS)/package-lock.json
	cd $(NODE_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

dev: tools ## run the whole flow locally: embedded nsqd, kinesalite, bridge, consumers
	$(GO) run ./cmd/nsqk dev $(ARGS)

test: tools vet ## vet + all tests (race detector on every non-CDK package)
	$(GO) test -race -count=1 $(GO_PKGS)
	@if [ -n "$(INFRA_PKGS)" ]; then $(GO) test -count=1 -timeout 15m $(INFRA_PKGS); fi

test-short: ## unit tests only, no emulators
	$(GO) test -short -count=1 $(GO_PKGS)

build: ## build the CLI and the bridge for this machine into bin/
	$(GO) build -trimpath -o $(BIN)/ ./cmd/nsqk ./functions/bridge

# Every consumer function: each functions/<name>/main.go except the bridge (a Fargate program).
LAMBDAS      := $(filter-out bridge,$(patsubst functions/%/main.go,%,$(wildcard functions/*/main.go)))

lambda: ## build every Lambda function (provided.al2023, arm64) into dist/<name>/bootstrap
	@for fn in $(LAMBDAS); do \
	  echo "dist/$$fn/bootstrap"; \
	  GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -tags lambda.norpc -ldflags='-s -w' \
	    -o dist/$$fn/bootstrap ./functions/$$fn || exit 1; \
	done

CDK          := $(NODE_TOOLS)/node_modules/.bin/cdk

synth: tools lambda ## synthesize the CDK app offline into cdk.out/ (cdk-nag checked; no Docker or AWS credentials needed)
	$(CDK) synth --quiet --strict $(CDK_ARGS)

.PHONY: cdk-bootstrap cdk-diff cdk-deploy cdk-destroy
cdk-bootstrap: tools lambda ## one-time per account/region: the CDK toolkit stack (asset bucket, ECR repository)
	$(CDK) bootstrap $(CDK_ARGS)

cdk-diff: tools lambda ## compare the stack with what is deployed (AWS credentials): make cdk-diff CDK_ARGS='-c key=value'
	$(CDK) diff $(CDK_ARGS)

cdk-deploy: tools lambda ## deploy the stack (AWS credentials, cdk-bootstrap done, Docker with BuildKit): make cdk-deploy CDK_ARGS='-c key=value'
	$(CDK) deploy --require-approval broadening $(CDK_ARGS)

cdk-destroy: tools lambda ## delete the stack (retained resources stay: see docs/deploy.md, Teardown)
	$(CDK) destroy $(CDK_ARGS)

# The second baseline is the same consumer built against go-nsq as released: its own module, so
# the patched copy in third_party/go-nsq does not apply to it.
bench: tools ## micro-benchmarks, then nsqk bench (~12 min on 2 cores; ARGS='--quick' ~3 min; ARGS='--compare-exe OLD' adds an older nsqk): table + .bench/report.json
	@mkdir -p .bench
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem ./shared/kpl ./shared/consumer ./shared/putrecords | tee .bench/micro.txt
	set -o pipefail; $(GO) test -run '^$$' -bench 'Tail|Decode' -benchmem -cpu 1 ./cmd/nsqk | tee -a .bench/micro.txt
	$(GO) build -trimpath -o $(BIN)/nsqk ./cmd/nsqk
	cd cmd/nsqk/internal/bench/released && $(GO) build -trimpath -o $(CURDIR)/$(BIN)/nsqk-baseline-released .
	$(BIN)/nsqk bench --micro .bench/micro.txt --released-baseline $(BIN)/nsqk-baseline-released --profile $(ARGS)

chaos: tools ## the fault suite, every case (~13 min on 2 cores): table on stdout, .chaos/report.json; ARGS='--quick' or ARGS='--case NAME'
	$(GO) build -trimpath -o $(BIN)/nsqk ./cmd/nsqk
	$(BIN)/nsqk chaos --out .chaos/report.json $(ARGS)

invoke: ## run a Lambda handler locally: make invoke FN=<name> EVENT=<file>
	@if [ -z "$(FN)" ] || [ -z "$(EVENT)" ]; then \
	  echo "usage: make invoke FN=<one of: $(LAMBDAS)> EVENT=<file, e.g. events/aggregated.json>"; exit 2; fi
	@$(GO) run ./functions/$(FN) -invoke $(EVENT)

fmt: ## gofmt every Go file
	gofmt -s -w $$(git ls-files '*.go' | grep -v '^third_party/')

vet: ## go vet + gofmt check
	@out=$$(gofmt -s -l $$( (git ls-files '*.go'; git ls-files --others --exclude-standard '*.go') 2>/dev/null | grep -v '^third_party/')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build output
	rm -rf $(BIN) dist cdk.out .dev .bench .chaos
