GO ?= go

.PHONY: test deps vet demo bench lint

deps:
	./scripts/ensure-deps

vet:
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -count=1 -timeout 14m ./...

# make demo NODES=16: the targeted copy demo with 16 nodes (2..256).
NODES ?= 4

demo: deps
	$(GO) run ./internal/sandbox -db demo,hub,n1..n$(NODES) -- sh -c '$(GO) run ./examples/quickstart && $(GO) run ./examples/targetedcopy/demo --nodes $(NODES)'
	$(GO) run ./internal/sandbox -db hub,n1..n3 -- $(GO) run ./examples/capture

bench: deps
	$(GO) run ./bench

lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
