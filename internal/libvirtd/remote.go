package libvirtd

import (
	"context"
	"fmt"
	"net"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// The part of libvirt's remote program (src/remote/remote_protocol.x) that the
// interop tests use. Procedure numbers never change in libvirt.
const (
	RemoteProgram = 0x20008086
	RemoteVersion = 1

	ProcConnectOpen                           = 1
	ProcConnectClose                          = 2
	ProcDomainCreateXML                       = 10
	ProcDomainDestroy                         = 12
	ProcDomainLookupByName                    = 23
	ProcConnectGetHostname                    = 59
	ProcConnectSupportsFeature                = 60
	ProcStoragePoolCreateXML                  = 76
	ProcStoragePoolDestroy                    = 80
	ProcStorageVolCreateXML                   = 93
	ProcStorageVolGetInfo                     = 98
	ProcConnectGetLibVersion                  = 157
	ProcStorageVolUpload                      = 208
	ProcStorageVolDownload                    = 209
	ProcDomainScreenshot                      = 211
	ProcConnectDomainEventCallbackRegisterAny = 316
	ProcDomainEventCallbackLifecycle          = 318

	// FeatureProgramKeepalive is VIR_DRV_FEATURE_PROGRAM_KEEPALIVE (10 in
	// virDrvFeature; 12 is VIR_DRV_FEATURE_MIGRATION_OFFLINE). Asking for it is
	// what makes libvirtd start pinging the client.
	FeatureProgramKeepalive = 10

	// VolStreamSparse is VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM and
	// VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM.
	VolStreamSparse = 1

	// DomainEventIDLifecycle is VIR_DOMAIN_EVENT_ID_LIFECYCLE.
	DomainEventIDLifecycle = 0
)

// virDomainEventType.
const (
	EventDefined   = 0
	EventUndefined = 1
	EventStarted   = 2
	EventSuspended = 3
	EventResumed   = 4
	EventStopped   = 5
)

// Proc names a remote-program procedure.
func Proc(n int32) rpc.Procedure {
	return rpc.Procedure{Prog: RemoteProgram, Vers: RemoteVersion, Proc: n}
}

// Domain is remote_nonnull_domain.
type Domain struct {
	Name string
	UUID [16]byte
	ID   int32
}

// StoragePool is remote_nonnull_storage_pool.
type StoragePool struct {
	Name string
	UUID [16]byte
}

// StorageVol is remote_nonnull_storage_vol.
type StorageVol struct {
	Pool, Name, Key string
}

// ConnectOpenArgs is remote_connect_open_args (name is remote_string: optional).
type ConnectOpenArgs struct {
	Name  *string
	Flags uint32
}

// SupportsFeatureArgs is remote_connect_supports_feature_args.
type SupportsFeatureArgs struct{ Feature int32 }

// SupportsFeatureRet is remote_connect_supports_feature_ret.
type SupportsFeatureRet struct{ Supported int32 }

// LibVersionRet is remote_connect_get_lib_version_ret.
type LibVersionRet struct{ LibVer uint64 }

// HostnameRet is remote_connect_get_hostname_ret.
type HostnameRet struct{ Hostname string }

// DomainLookupByNameArgs is remote_domain_lookup_by_name_args.
type DomainLookupByNameArgs struct{ Name string }

// DomainRet is the reply of the lookups and DOMAIN_CREATE_XML.
type DomainRet struct{ Dom Domain }

// DomainCreateXMLArgs is remote_domain_create_xml_args.
type DomainCreateXMLArgs struct {
	XMLDesc string
	Flags   uint32
}

// DomainArgs is the argument of DOMAIN_DESTROY (and DOMAIN_CREATE).
type DomainArgs struct{ Dom Domain }

// EventCallbackRegisterAnyArgs is
// remote_connect_domain_event_callback_register_any_args (dom is
// remote_domain: optional; nil means every domain).
type EventCallbackRegisterAnyArgs struct {
	EventID int32
	Dom     *Domain
}

// EventCallbackRegisterAnyRet is its reply.
type EventCallbackRegisterAnyRet struct{ CallbackID int32 }

// LifecycleMsg is remote_domain_event_callback_lifecycle_msg, the payload of
// a DOMAIN_EVENT_CALLBACK_LIFECYCLE MESSAGE.
type LifecycleMsg struct {
	CallbackID int32
	Dom        Domain
	Event      int32
	Detail     int32
}

// DomainScreenshotArgs is remote_domain_screenshot_args.
type DomainScreenshotArgs struct {
	Dom    Domain
	Screen uint32
	Flags  uint32
}

// DomainScreenshotRet is remote_domain_screenshot_ret (mime is optional).
type DomainScreenshotRet struct{ Mime *string }

// StoragePoolCreateXMLArgs is remote_storage_pool_create_xml_args.
type StoragePoolCreateXMLArgs struct {
	XML   string
	Flags uint32
}

// StoragePoolRet is a reply carrying a pool.
type StoragePoolRet struct{ Pool StoragePool }

// StoragePoolArgs is the argument of STORAGE_POOL_DESTROY.
type StoragePoolArgs struct{ Pool StoragePool }

// StorageVolCreateXMLArgs is remote_storage_vol_create_xml_args.
type StorageVolCreateXMLArgs struct {
	Pool  StoragePool
	XML   string
	Flags uint32
}

// StorageVolRet is a reply carrying a volume.
type StorageVolRet struct{ Vol StorageVol }

// StorageVolArgs is the argument of STORAGE_VOL_GET_INFO.
type StorageVolArgs struct{ Vol StorageVol }

// StorageVolInfoRet is remote_storage_vol_get_info_ret (XDR char is a 4-byte int).
type StorageVolInfoRet struct {
	Type       int32
	Capacity   uint64
	Allocation uint64
}

// StorageVolTransferArgs is remote_storage_vol_upload_args and
// remote_storage_vol_download_args.
type StorageVolTransferArgs struct {
	Vol    StorageVol
	Offset uint64
	Length uint64
	Flags  uint32
}

// Client starts a compat-mode connection on nc (libvirtd answers virtrpc's
// HELLO with an error; CompatOnly does not even offer it) and opens uri on it
// with CONNECT_OPEN. opts may be nil; its Negotiation is forced to CompatOnly.
func Client(ctx context.Context, nc net.Conn, uri string, opts *rpc.Options) (*rpc.Conn, error) {
	o := rpc.Options{}
	if opts != nil {
		o = *opts
	}
	o.Negotiation = rpc.CompatOnly
	c, err := rpc.Client(ctx, nc, &o)
	if err != nil {
		return nil, err
	}
	if err := c.CallXDR(ctx, Proc(ProcConnectOpen), &ConnectOpenArgs{Name: &uri}, nil); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("CONNECT_OPEN %s: %w", uri, err)
	}
	return c, nil
}

// OpenStream calls proc with args (encoded by the xdr codec), opens the
// stream of the call in direction dir (stream.Upload for
// STORAGE_VOL_UPLOAD, stream.Download for STORAGE_VOL_DOWNLOAD and
// DOMAIN_SCREENSHOT) and decodes the reply into replyTo (nil for an empty
// reply). It is the one place the interop tests open streams.
func OpenStream(ctx context.Context, c *rpc.Conn, proc int32, dir stream.Direction, sparse bool, args, replyTo any) (*stream.Stream, error) {
	return c.OpenStreamXDR(ctx, Proc(proc), args, dir, &stream.Options{Sparse: sparse}, replyTo)
}
