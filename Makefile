# amibackup developer targets. `make demo` and `make test` are the two
# commands of the README; .ci/run calls `make test` and nothing else.
SHELL := /bin/bash
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(TOOLS)/node_modules/.bin:$(PATH)
RIE_VERSION := v0.0.0-20261030222936-bef5c4ba774d
CDK_VERSION := 2.1148
NODE_VERSION := 22
# Offline Step Functions (pkg/sfnlocal); pinned, read by the package's FindEngine.
LOCAL_SFN_VERSION := 3.0.0
ASL_VALIDATOR_VERSION := 4.0.0
space := $(subst ,, )
FUNCTIONS := $(notdir $(wildcard functions/*))
# The stacks build arm64; the local run and e2e tests build for this machine
# with the same flags so the RIE can execute them.
GO_LAMBDA_FLAGS := -tags lambda.norpc -trimpath -ldflags='-s -w'

.PHONY: tools rie node build build-local test test-go lint bench demo synth clean

tools: rie node

rie: $(TOOLS)/bin/aws-lambda-rie
$(TOOLS)/bin/aws-lambda-rie:
	GOBIN=$(TOOLS)/bin go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

# The stamp names the package set, so a .tools installed before a package
# was added (or a version changed) gets it on the next `make node`.
NODE_PACKAGES := node@$(NODE_VERSION) aws-cdk@$(CDK_VERSION) \
  aws-local-stepfunctions@$(LOCAL_SFN_VERSION) asl-validator@$(ASL_VALIDATOR_VERSION)
NODE_STAMP := $(TOOLS)/.stamp-npm-$(subst @,-,$(subst $(space),_,$(strip $(NODE_PACKAGES))))

node: $(NODE_STAMP)
$(NODE_STAMP):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && { [ -f package.json ] || echo '{"name":"amibackup-tools","private":true}' > package.json; } && \
	  npm install --no-audit --no-fund --loglevel=error node@$(NODE_VERSION) aws-cdk@$(CDK_VERSION) && \
	  npm install --no-audit --no-fund --loglevel=error --save-exact \
	    aws-local-stepfunctions@$(LOCAL_SFN_VERSION) asl-validator@$(ASL_VALIDATOR_VERSION)
	touch $@

# Lambda artifacts exactly as the stacks bundle them (linux/arm64).
build:
	@for f in $(FUNCTIONS); do \
	  mkdir -p build/arm64/$$f && \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build $(GO_LAMBDA_FLAGS) -o build/arm64/$$f/bootstrap ./functions/$$f || exit 1; \
	done

# Same flags, this machine's architecture, for the RIE.
build-local:
	@for f in $(FUNCTIONS); do \
	  mkdir -p build/local/$$f && \
	  CGO_ENABLED=0 go build $(GO_LAMBDA_FLAGS) -o build/local/$$f/bootstrap ./functions/$$f || exit 1; \
	done

lint:
	@out=$$(gofmt -l functions infra pkg); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

# The whole suite: lint, unit, emulator contract (with moto when present),
# CDK assertions + cdk-nag + cdk synth, and the RIE end-to-end tests.
test: tools lint
	go test -count=1 -timeout 40m ./...
	go test -race -short -count=1 -timeout 30m ./pkg/...

bench: tools
	go test -run '^$$' -bench . -benchtime 1x -timeout 30m ./pkg/... ./infra/...

synth: node
	cdk synth --quiet

demo: tools
	go run ./pkg/localrun/cmd/amibackup-demo $(DEMO_FLAGS)

clean:
	rm -rf build cdk.out
