package sasl

import (
	"fmt"
	"strings"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
)

// libvirt's remote program and its authentication procedures
// (src/remote/remote_protocol.x). virtrpc peers use the same procedures in
// native mode.
const (
	RemoteProgram = 0x20008086
	RemoteVersion = 1

	ProcAuthList      = 66
	ProcAuthSASLInit  = 67
	ProcAuthSASLStart = 68
	ProcAuthSASLStep  = 69

	// AuthNone and AuthSASL are remote_auth_type values in AUTH_LIST's
	// reply (AuthPolkit, 2, is libvirt's polkit, not spoken here).
	AuthNone   = 0
	AuthSASL   = 1
	AuthPolkit = 2

	// MaxData is REMOTE_AUTH_SASL_DATA_MAX: the most bytes of SASL data
	// in one message (each takes 4 bytes on the wire, as an XDR char).
	MaxData = 65536
)

// Procedures are the authentication procedures: the rpc.AuthGate of a
// server that authenticates with SASL lets exactly these through.
var Procedures = []rpc.Procedure{proc(ProcAuthList), proc(ProcAuthSASLInit), proc(ProcAuthSASLStart), proc(ProcAuthSASLStep)}

func proc(n int32) rpc.Procedure {
	return rpc.Procedure{Prog: RemoteProgram, Vers: RemoteVersion, Proc: n}
}

// AuthListRet is remote_auth_list_ret (at most REMOTE_AUTH_TYPE_LIST_MAX,
// 20, types).
type AuthListRet struct {
	Types []int32 `xdr:"max=20"`
}

// SASLInitRet is remote_auth_sasl_init_ret: mechanisms, comma-separated.
// libvirt's remote_nonnull_string allows 4 MiB; no real list comes near
// the 4 KiB decoded here.
type SASLInitRet struct {
	Mechlist string `xdr:"max=4096"`
}

// SASLStartArgs is remote_auth_sasl_start_args. Nil (libvirt's int nil)
// says there is no data, as opposed to empty data.
type SASLStartArgs struct {
	Mech string `xdr:"max=64"`
	Nil  int32
	Data []byte `xdr:"char,max=65536"`
}

// SASLStepArgs is remote_auth_sasl_step_args.
type SASLStepArgs struct {
	Nil  int32
	Data []byte `xdr:"char,max=65536"`
}

// SASLReply is remote_auth_sasl_start_ret and remote_auth_sasl_step_ret.
type SASLReply struct {
	Complete int32
	Nil      int32
	Data     []byte `xdr:"char,max=65536"`
}

// data returns the SASL data: nil when the peer said "no data".
func data(isNil int32, b []byte) []byte {
	if isNil != 0 {
		return nil
	}
	if b == nil {
		return []byte{}
	}
	return b
}

// nilFlag is the int nil field for b.
func nilFlag(b []byte) int32 {
	if b == nil {
		return 1
	}
	return 0
}

// DecodeSASLStart decodes AUTH_SASL_START's arguments, checking them as a
// server must: a mechanism name of SASL's characters, no data when nil is
// set. It returns the data as SASL sees it: nil for "no data".
func DecodeSASLStart(b []byte) (mech string, d []byte, err error) {
	var a SASLStartArgs
	if err := xdr.Unmarshal(b, &a); err != nil {
		return "", nil, fmt.Errorf("%w: AUTH_SASL_START arguments: %w", ErrMalformed, err)
	}
	if err := checkMechName(a.Mech); err != nil {
		return "", nil, err
	}
	if err := checkNil(a.Nil, a.Data); err != nil {
		return "", nil, err
	}
	return a.Mech, data(a.Nil, a.Data), nil
}

// DecodeSASLStep decodes AUTH_SASL_STEP's arguments.
func DecodeSASLStep(b []byte) ([]byte, error) {
	var a SASLStepArgs
	if err := xdr.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%w: AUTH_SASL_STEP arguments: %w", ErrMalformed, err)
	}
	if err := checkNil(a.Nil, a.Data); err != nil {
		return nil, err
	}
	return data(a.Nil, a.Data), nil
}

// DecodeSASLReply decodes the reply of AUTH_SASL_START or STEP.
func DecodeSASLReply(b []byte) (complete bool, d []byte, err error) {
	var r SASLReply
	if err := xdr.Unmarshal(b, &r); err != nil {
		return false, nil, fmt.Errorf("%w: AUTH_SASL reply: %w", ErrMalformed, err)
	}
	if r.Complete != 0 && r.Complete != 1 {
		return false, nil, fmt.Errorf("%w: AUTH_SASL reply: complete is %d", ErrMalformed, r.Complete)
	}
	if err := checkNil(r.Nil, r.Data); err != nil {
		return false, nil, err
	}
	return r.Complete == 1, data(r.Nil, r.Data), nil
}

// ParseMechList splits AUTH_SASL_INIT's list. libvirt's is comma-separated;
// Cyrus SASL's own default separator is a space, so both are accepted.
func ParseMechList(s string) ([]string, error) {
	var mechs []string
	for m := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if err := checkMechName(m); err != nil {
			return nil, err
		}
		mechs = append(mechs, m)
	}
	return mechs, nil
}

func checkNil(isNil int32, b []byte) error {
	switch {
	case isNil != 0 && isNil != 1:
		return fmt.Errorf("%w: nil is %d", ErrMalformed, isNil)
	case isNil == 1 && len(b) > 0:
		return fmt.Errorf("%w: nil is set and %d bytes of data follow", ErrMalformed, len(b))
	}
	return nil
}

// checkMechName checks RFC 4422's sasl-mech: 1 to 20 of A-Z 0-9 - _.
func checkMechName(m string) error {
	if len(m) == 0 || len(m) > 20 {
		return fmt.Errorf("%w: mechanism name %.30q: 1 to 20 characters", ErrMalformed, m)
	}
	for _, c := range []byte(m) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: mechanism name %.30q: only A-Z, 0-9, '-' and '_'", ErrMalformed, m)
		}
	}
	return nil
}
