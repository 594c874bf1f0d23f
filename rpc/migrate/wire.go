package migrate

import "github.com/virtrpc/virtrpc/rpc"

// The migration program. The source calls, the destination serves.
const (
	migrateProg = 0x4d494752 // "MIGR"
	migrateVers = 3          // libvirt's v3 migration
)

// Procedures of the migration program (see the package documentation).
var (
	ProcPrepare = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 1}
	ProcTunnel  = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 2}
	ProcWatch   = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 3}
	ProcFinish  = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 4}
	ProcConfirm = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 5}
	ProcAbort   = rpc.Procedure{Prog: migrateProg, Vers: migrateVers, Proc: 6}
)

// Limits on what a source may announce.
const (
	maxStreams = 64
	maxCookie  = 1 << 20
	maxID      = 256
	maxSize    = 1 << 60 // bytes, all streams' sizes together
)

// XDR payloads of the procedures.
type (
	wireStream struct {
		Name   string `xdr:"max=256"`
		Size   int64
		Sparse bool
	}
	prepareArgs struct {
		ID      string       `xdr:"max=256"`
		Cookie  []byte       `xdr:"max=1048576"`
		Streams []wireStream `xdr:"max=64"`
	}
	cookieRet struct {
		Cookie []byte `xdr:"max=1048576"`
	}
	tunnelArgs struct {
		ID    string `xdr:"max=256"`
		Index uint32
	}
	idArgs struct {
		ID string `xdr:"max=256"`
	}
	finishArgs struct {
		ID     string  `xdr:"max=256"`
		Sent   []int64 `xdr:"max=64"` // data bytes per stream
		Cookie []byte  `xdr:"max=1048576"`
	}
	// outcomeArgs is CONFIRM's and ABORT's: Failed is the source's failure
	// (Confirm: nil after a successful confirm).
	outcomeArgs struct {
		ID     string `xdr:"max=256"`
		Failed *wireFailure
	}
	wireFailure struct {
		Phase  int32
		Side   int32
		Reason string `xdr:"max=65536"`
	}
)

func toFailure(e *Error) *wireFailure {
	if e == nil {
		return nil
	}
	w := e.wire()
	return &wireFailure{Phase: int32(e.Phase), Side: int32(e.Side), Reason: *w.Str3}
}

func (f *wireFailure) err() *Error {
	e := &Error{Phase: Phase(f.Phase), Side: Side(f.Side), Err: &remoteReason{text: f.Reason}}
	if e.Phase < Begin || e.Phase > Confirm {
		e.Phase = Confirm
	}
	if e.Side != Destination {
		e.Side = Source
	}
	return e
}
