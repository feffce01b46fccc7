GO ?= go

.PHONY: test deps vet demo bench lint

deps:
	./scripts/ensure-deps

vet:
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -count=1 -timeout 14m ./...

demo: deps
	$(GO) run ./internal/sandbox -db demo,hub,n1,n2,n3,n4 -- sh -c '$(GO) run ./examples/quickstart && $(GO) run ./examples/targetedcopy/demo'

bench: deps
	$(GO) run ./bench

lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
