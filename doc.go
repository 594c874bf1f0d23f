// Package virtrpc carries RPC calls and bulk data streams over one
// authenticated, encrypted connection, speaking libvirt's RPC wire protocol.
//
// It is made for virtualization managers and hypervisor agents that move
// gigabytes (VM memory, disk images) between hosts through the same single
// port as their control calls: a stream runs at the speed of a direct TLS
// connection while small calls on the same connection stay responsive.
//
// The packages:
//
//   - [github.com/virtrpc/virtrpc/rpc]: the connection. Either side calls and
//     serves, with concurrent calls, one-way messages, keepalive, an auth
//     gate, and streams opened by calls. Two virtrpc peers negotiate native
//     mode (per-stream flow control, larger frames, calls both ways); toward
//     libvirt it runs libvirt's own protocol (compat mode).
//   - [github.com/virtrpc/virtrpc/stream]: the data stream, with a direction
//     declared when it is opened (upload, download or duplex): an io.Writer /
//     io.ReaderFrom on the sending side and an io.Reader / io.WriterTo on the
//     receiving side, with holes for sparse files, the receiver's verdict on
//     Close, half-close, and a net.Conn view for tunnelling sockets.
//   - [github.com/virtrpc/virtrpc/frame]: the wire format, a standalone
//     framer and libvirt's error payload; [github.com/virtrpc/virtrpc/frame/xdr]
//     the XDR codec.
//   - [github.com/virtrpc/virtrpc/transport]: TCP, unix and TLS dialers and
//     listeners, libvirt's PKI layout.
//
// The example below runs a server and a client on loopback, makes a call and
// streams data with io.Copy.
package virtrpc
