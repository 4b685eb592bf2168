package notify

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// notifierFile is the reference's notifier.proto as a descriptor: the
// hand-written encoding must give the bytes protobuf gives for it.
func notifierFile(t *testing.T) protoreflect.FileDescriptor {
	t.Helper()
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	byt := descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	fd := &descriptorpb.FileDescriptorProto{
		Name: proto.String("notifier.proto"), Package: proto.String("proto"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Notification"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("text"), Number: proto.Int32(1), Type: str, Label: opt, JsonName: proto.String("text")},
				{Name: proto.String("name"), Number: proto.Int32(2), Type: str, Label: opt, JsonName: proto.String("name")}}},
			{Name: proto.String("Config"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("config"), Number: proto.Int32(2), Type: byt, Label: opt, JsonName: proto.String("config")}}},
			{Name: proto.String("Empty")},
		},
	}
	f, err := protodesc.NewFile(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWireMatchesProtobuf(t *testing.T) {
	f := notifierFile(t)
	nd, cd := f.Messages().ByName("Notification"), f.Messages().ByName("Config")
	for _, n := range []Notification{{}, {Text: "hello", Name: "http_default"}, {Text: string(make([]byte, 70000)), Name: "é"}, {Name: "only"}} {
		dm := dynamicpb.NewMessage(nd)
		if n.Text != "" {
			dm.Set(nd.Fields().ByName("text"), protoreflect.ValueOfString(n.Text))
		}
		if n.Name != "" {
			dm.Set(nd.Fields().ByName("name"), protoreflect.ValueOfString(n.Name))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(dm)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := wireCodec{}.Marshal(&n)
		if !bytes.Equal(got, want) {
			t.Fatalf("notification %q: got %x want %x", n.Name, got, want)
		}
		var back Notification
		if err := (wireCodec{}).Unmarshal(want, &back); err != nil || back != n {
			t.Fatalf("decode: %+v %v", back, err)
		}
	}
	c := PluginConfig{Config: []byte("type: http\nname: x\n")}
	dm := dynamicpb.NewMessage(cd)
	dm.Set(cd.Fields().ByName("config"), protoreflect.ValueOfBytes(c.Config))
	want, _ := proto.Marshal(dm)
	got, _ := wireCodec{}.Marshal(&c)
	if !bytes.Equal(got, want) {
		t.Fatalf("config: got %x want %x", got, want)
	}
	var back PluginConfig
	if err := (wireCodec{}).Unmarshal(want, &back); err != nil || string(back.Config) != string(c.Config) {
		t.Fatal(back, err)
	}
	// unknown fields (a newer peer) are skipped; garbage is an error
	extra := append(append([]byte{}, want...), 0x18, 0x05) // field 3, varint 5
	if err := (wireCodec{}).Unmarshal(extra, &back); err != nil || string(back.Config) != string(c.Config) {
		t.Fatal("unknown field:", err)
	}
	if err := (wireCodec{}).Unmarshal([]byte{0x12, 0x7f}, &back); err == nil {
		t.Fatal("truncated message accepted")
	}
	if err := (wireCodec{}).Unmarshal(nil, &Empty{}); err != nil {
		t.Fatal(err)
	}
}
