package notify

import (
	"context"
	"errors"
	"fmt"
	"os"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The plugin wire protocol of CrowdSec v1.7.6 (pkg/protobufs/notifier.proto
// and pkg/csplugin), written by hand so that the product module does not
// depend on the crowdsec module:
//
//	package proto;
//	message Notification { string text = 1; string name = 2; }
//	message Config { bytes config = 2; }
//	message Empty {}
//	service Notifier { rpc Notify(Notification) returns (Empty);
//	                   rpc Configure(Config) returns (Empty); }
//
// The messages are encoded with protowire through a gRPC codec forced on
// our calls only (its name is "proto", so the content type is the
// standard application/grpc+proto the plugins' generated servers expect).
// go-plugin's own services (health, broker, controller, stdio) keep the
// stock proto codec.

// Handshake values of the reference's plugin broker: go-plugin protocol
// version 1, magic cookie key CROWDSEC_PLUGIN_KEY; the cookie value is a
// fresh random UUID per process (the plugins check only that the key is
// set to the value the environment gives them).
const (
	ProtocolVersion = 1
	MagicCookieKey  = "CROWDSEC_PLUGIN_KEY"
)

// gRPC method names of the Notifier service.
const (
	methodNotify    = "/proto.Notifier/Notify"
	methodConfigure = "/proto.Notifier/Configure"
)

// Notification is the Notify request: the formatted text and the
// notification name (the plugin keys its configurations by name).
type Notification struct {
	Text string
	Name string
}

// PluginConfig is the Configure request: one notification config as YAML.
type PluginConfig struct {
	Config []byte
}

// Empty is the answer of both calls.
type Empty struct{}

func (n *Notification) marshal() []byte {
	var b []byte
	if n.Text != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, n.Text)
	}
	if n.Name != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, n.Name)
	}
	return b
}

func (c *PluginConfig) marshal() []byte {
	var b []byte
	if len(c.Config) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, c.Config)
	}
	return b
}

// eachField calls fn for every field of a protobuf message, skipping
// nothing: fn sees the number, wire type and the raw value (for bytes
// fields, the content).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			val, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			v, n = val, m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
		}
		fn(num, typ, v)
		b = b[n:]
	}
	return nil
}

func (n *Notification) unmarshal(b []byte) error {
	*n = Notification{}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ != protowire.BytesType {
			return
		}
		switch num {
		case 1:
			n.Text = string(v)
		case 2:
			n.Name = string(v)
		}
	})
}

func (c *PluginConfig) unmarshal(b []byte) error {
	*c = PluginConfig{}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ == protowire.BytesType && num == 2 {
			c.Config = append([]byte(nil), v...)
		}
	})
}

// wireCodec encodes our messages with protowire and anything else (go-plugin's
// own generated messages, when used as a server codec in tests) with proto.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *Notification:
		return m.marshal(), nil
	case *PluginConfig:
		return m.marshal(), nil
	case *Empty:
		return nil, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("notify codec: cannot marshal %T", v)
}

func (wireCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *Notification:
		return m.unmarshal(data)
	case *PluginConfig:
		return m.unmarshal(data)
	case *Empty:
		return eachField(data, func(protowire.Number, protowire.Type, []byte) {})
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("notify codec: cannot unmarshal into %T", v)
}

// Notifier is a running notification plugin's service.
type Notifier interface {
	Notify(ctx context.Context, n *Notification) error
	Configure(ctx context.Context, c *PluginConfig) error
}

// grpcNotifier is the client side of the Notifier service.
type grpcNotifier struct {
	cc grpc.ClientConnInterface
}

func (g *grpcNotifier) Notify(ctx context.Context, n *Notification) error {
	// the reference gives up on the call when ctx ends even if the plugin
	// does not; grpc's Invoke honours ctx the same way
	return g.cc.Invoke(ctx, methodNotify, n, &Empty{}, grpc.ForceCodec(wireCodec{}))
}

func (g *grpcNotifier) Configure(ctx context.Context, c *PluginConfig) error {
	return g.cc.Invoke(ctx, methodConfigure, c, &Empty{}, grpc.ForceCodec(wireCodec{}))
}

// notifierPlugin is the go-plugin GRPCPlugin of the Notifier service. Impl
// is only used to serve (the fake plugins of the tests).
type notifierPlugin struct {
	plugin.Plugin
	Impl Notifier
}

func (p *notifierPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &grpcNotifier{cc: c}, nil
}

func (p *notifierPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("notifier plugin: no implementation to serve")
	}
	s.RegisterService(&notifierServiceDesc, p.Impl)
	return nil
}

var notifierServiceDesc = grpc.ServiceDesc{
	ServiceName: "proto.Notifier",
	HandlerType: (*Notifier)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Notify", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(Notification)
			if err := dec(in); err != nil {
				return nil, err
			}
			return &Empty{}, srv.(Notifier).Notify(ctx, in)
		}},
		{MethodName: "Configure", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(PluginConfig)
			if err := dec(in); err != nil {
				return nil, err
			}
			return &Empty{}, srv.(Notifier).Configure(ctx, in)
		}},
	},
	Metadata: "notifier.proto",
}

// ServePlugin runs impl as a notification plugin speaking the reference's
// protocol (for tests and fake plugins: the real ones are CrowdSec's).
// It returns only when the host stops the plugin.
func ServePlugin(impl Notifier) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: ProtocolVersion, MagicCookieKey: MagicCookieKey,
			MagicCookieValue: serveCookie()},
		Plugins: map[string]plugin.Plugin{"notifier": &notifierPlugin{Impl: impl}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.ForceServerCodec(wireCodec{}))...)
		},
	})
}

// serveCookie is the cookie value the host gave the plugin (the reference's
// plugins read it from their environment).
func serveCookie() string { return os.Getenv(MagicCookieKey) }
