package authz

import (
	"encoding/base64"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// protoToAST converts a message to the AST value protojson would produce
// (camelCase names, unpopulated fields omitted, 64-bit integers as strings,
// enums by name), without the JSON round trip OPA-Envoy pays on every
// check. Well-known types take the slow, exact path through protojson.
// It reads any message through protobuf reflection; the check converts
// Envoy's AttributeContext with attributeContextAST, which is held to
// give exactly what this gives.
//
// need limits the conversion to what policy can read (see
// policy.InputNeeds); nil need converts nothing.
func protoToAST(m protoreflect.Message, need *policy.InputNeeds) (ast.Value, error) {
	if isWellKnown(m.Descriptor().FullName()) {
		return viaJSON(m)
	}
	if !need.All {
		fields := m.Descriptor().Fields()
		obj := ast.NewObjectWithCapacity(len(need.Children))
		for key, child := range need.Children {
			fd := fields.ByJSONName(key)
			if fd == nil || !m.Has(fd) {
				continue
			}
			val, err := fieldToAST(fd, m.Get(fd), child)
			if err != nil {
				return nil, err
			}
			obj.Insert(keyTerm(key), ast.NewTerm(val))
		}
		return obj, nil
	}
	obj := ast.NewObjectWithCapacity(min(m.Descriptor().Fields().Len(), 8))
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var val ast.Value
		val, err = fieldToAST(fd, v, need)
		if err != nil {
			return false
		}
		obj.Insert(keyTerm(fd.JSONName()), ast.NewTerm(val))
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func fieldToAST(fd protoreflect.FieldDescriptor, v protoreflect.Value, need *policy.InputNeeds) (ast.Value, error) {
	switch {
	case fd.IsMap():
		mp := v.Map()
		if !need.All && fd.MapKey().Kind() == protoreflect.StringKind {
			obj := ast.NewObjectWithCapacity(len(need.Children))
			for key := range need.Children {
				mv := mp.Get(protoreflect.ValueOfString(key).MapKey())
				if !mv.IsValid() {
					continue
				}
				val, err := singularToAST(fd.MapValue(), mv, policy.AllInput)
				if err != nil {
					return nil, err
				}
				obj.Insert(keyTerm(key), ast.NewTerm(val))
			}
			return obj, nil
		}
		obj := ast.NewObjectWithCapacity(mp.Len())
		var err error
		mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			var val ast.Value
			val, err = singularToAST(fd.MapValue(), mv, policy.AllInput)
			if err != nil {
				return false
			}
			obj.Insert(keyTerm(k.String()), ast.NewTerm(val))
			return true
		})
		return obj, err
	case fd.IsList():
		l := v.List()
		terms := make([]*ast.Term, l.Len())
		for i := range terms {
			val, err := singularToAST(fd, l.Get(i), policy.AllInput)
			if err != nil {
				return nil, err
			}
			terms[i] = ast.NewTerm(val)
		}
		return ast.NewArray(terms...), nil
	default:
		return singularToAST(fd, v, need)
	}
}

func singularToAST(fd protoreflect.FieldDescriptor, v protoreflect.Value, need *policy.InputNeeds) (ast.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return internedString(v.String()), nil
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return ast.String("NaN"), nil
		case math.IsInf(f, 1):
			return ast.String("Infinity"), nil
		case math.IsInf(f, -1):
			return ast.String("-Infinity"), nil
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return ast.Number(strconv.FormatFloat(f, 'g', -1, bits)), nil
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.Null{}, nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name()), nil
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10)), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoToAST(v.Message(), need)
	}
	return ast.Null{}, nil
}

func isWellKnown(name protoreflect.FullName) bool {
	return len(name) > 16 && name[:16] == "google.protobuf."
}

func viaJSON(m protoreflect.Message) (ast.Value, error) {
	bs, err := protojson.Marshal(m.Interface())
	if err != nil {
		return nil, err
	}
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(x)
}

// internedString returns the shared value of a common string (methods,
// schemes, protocols), saving the allocation of boxing it.
func internedString(s string) ast.Value {
	if t, ok := internedKeys[s]; ok {
		return t.Value
	}
	return ast.String(s)
}
