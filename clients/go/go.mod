module github.com/campaign-grpc/campaign-grpc/clients/go

// No go.sum is committed: the tests build this module against Debian's Go sources (in GOPATH
// mode, and through a module proxy made from them), whose hashes are not the public checksum
// database's. `go mod tidy` against the real proxy writes the true one.

// 1.16: the first with go:embed.
go 1.16

// The oldest versions the code works with: gRPC-Go 1.32 for the generated service code
// (grpc.SupportPackageIsVersion7), protobuf-go 1.28.1 for the messages (the protoc-gen-go
// that wrote them), and for the google.rpc details the genproto that gRPC-Go 1.33's go.mod
// requires.
require (
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.32.0
	google.golang.org/protobuf v1.28.1
)
