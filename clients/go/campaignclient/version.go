package campaignclient

// Version is the release of the module (its tag is clients/go/v<Version>), the same for the
// contract and every language's package; tools/versions.py writes it.
const Version = "0.1.0"
