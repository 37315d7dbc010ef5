// A program of another team that uses the module github.com/campaign-grpc/campaign-grpc/clients/go
// as its users do: tests/e2e/test_go_module.py copies this folder, runs
// `go get github.com/campaign-grpc/campaign-grpc/clients/go@vX.Y.Z` in it, builds and runs it.
// No go.sum here: the test's module proxy is made from Debian's sources, whose hashes are not
// those of the public checksum database.
module example.com/consumer

go 1.19

// The gRPC-Go this team already uses: Debian 12's, newer than the module's minimum (1.32.0).
require google.golang.org/grpc v1.33.3
