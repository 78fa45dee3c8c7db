package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/deputyhq/deputy/sidecar"
)

// setting is one documented leaf of Config: a flag, an environment
// variable and a YAML key, or a YAML key only (lists of structs, maps).
type setting struct {
	path     string // YAML path, dotted; list items as issuers[].issuer
	typ      reflect.Type
	usage    string
	def      string // the default as the user writes it; "" when none
	index    []int  // field index from Config; nil for YAML-only items
	yamlOnly bool
	section  bool // a struct or list heading, documented but not set
}

// settings lists every setting of Config in declaration order, with the
// defaults of def (a defaulted Config).
func settings(def Config) []setting {
	var out []setting
	walkSettings(reflect.TypeOf(def), reflect.ValueOf(def), "", nil, false, &out)
	return out
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
)

func walkSettings(t reflect.Type, v reflect.Value, prefix string, index []int, yamlOnly bool, out *[]setting) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if !sf.IsExported() || name == "-" {
			continue
		}
		if inline(sf) {
			// Its settings are the section's own.
			var fv reflect.Value
			if v.IsValid() {
				fv = v.Field(i)
			}
			walkSettings(sf.Type, fv, prefix, append(slices.Clone(index), i), yamlOnly, out)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		idx := append(slices.Clone(index), i)
		var fv reflect.Value
		if v.IsValid() {
			fv = v.Field(i)
		}
		s := setting{path: path, typ: sf.Type, usage: sf.Tag.Get("usage"), index: idx, yamlOnly: yamlOnly}
		ft := sf.Type
		switch {
		case ft.Kind() == reflect.Struct && ft != timeType:
			s.section = true
			*out = append(*out, s)
			walkSettings(ft, fv, path, idx, yamlOnly, out)
			continue
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			s.section, s.yamlOnly, s.index = true, true, nil
			*out = append(*out, s)
			walkSettings(ft.Elem(), reflect.Value{}, path, nil, true, out)
			continue
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			s.section, s.yamlOnly = true, true
			*out = append(*out, s)
			walkSettings(ft.Elem(), reflect.Value{}, path+"[]", nil, true, out)
			continue
		case ft.Kind() == reflect.Map:
			s.yamlOnly = true
		case flaggable(ft):
		default:
			continue
		}
		if s.yamlOnly {
			s.index = nil
		}
		if d, ok := sf.Tag.Lookup("default"); ok {
			s.def = d
		} else if fv.IsValid() {
			s.def = formatValue(fv)
		}
		*out = append(*out, s)
	}
}

// flaggable reports whether a field of type t is set by one flag value.
func flaggable(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// typeName is the type as a user writes it, in flag help and the docs.
func typeName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "int"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "list"
	case t.Kind() == reflect.Slice:
		return "strings"
	case t.Kind() == reflect.Map:
		return "map"
	}
	return t.Kind().String()
}

// formatValue prints a value as a user would write it: 5m rather than
// 5m0s, lists comma-separated, maps as key=a,b pairs.
func formatValue(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		return formatDuration(time.Duration(v.Int()))
	case v.Kind() == reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	case v.Kind() == reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + formatValue(v.MapIndex(reflect.ValueOf(k)))
		}
		return strings.Join(parts, "; ")
	}
	return fmt.Sprint(v.Interface())
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func flagName(path string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(path)
}

func envName(path string) string {
	return "DEPUTY_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(path))
}

// configLoader binds Config to flags and resolves file, env and flags.
type configLoader struct {
	flagged  Config // what the flags parse into
	file     string
	settings []setting
	sections []string // when set, only these top-level sections
	flags    *pflag.FlagSet
}

// newConfigLoader binds every setting to a flag of fs; given sections, only
// theirs: a tool such as `decisions tail` takes serve's Redis settings by
// the same names, and reads the same file.
func newConfigLoader(fs *pflag.FlagSet, sections ...string) *configLoader {
	l := &configLoader{flags: fs, sections: sections}
	for _, s := range settings(defaultConfig()) {
		if l.covers(s.path) {
			l.settings = append(l.settings, s)
		}
	}
	fs.StringVarP(&l.file, "config", "c", "", "YAML configuration file (env DEPUTY_CONFIG)")
	root := reflect.ValueOf(&l.flagged).Elem()
	for _, s := range l.settings {
		if s.section || s.yamlOnly {
			continue
		}
		f := fs.VarPF(&fieldValue{v: root.FieldByIndex(s.index), path: s.path}, flagName(s.path), "", s.usage+" (env "+envName(s.path)+")")
		f.DefValue = s.def
		if s.def == "0s" || s.def == "0" || s.def == "false" {
			f.DefValue = "" // pflag would print a zero default
		}
		if typeName(s.typ) == "bool" {
			f.NoOptDefVal = "true"
		}
	}
	return l
}

func (l *configLoader) covers(path string) bool {
	if len(l.sections) == 0 {
		return true
	}
	for _, sec := range l.sections {
		if path == sec || strings.HasPrefix(path, sec+".") {
			return true
		}
	}
	return false
}

// fieldValue exposes a config field as a flag value. A repeated list flag
// adds to the list; a list flag also takes comma-separated values.
type fieldValue struct {
	v    reflect.Value
	path string
	set  bool
}

func (f *fieldValue) String() string {
	if f == nil || !f.v.IsValid() {
		return ""
	}
	return formatValue(f.v)
}

func (f *fieldValue) Set(s string) error {
	if err := blankRefused(f.path, s); err != nil {
		return err
	}
	if f.set && f.v.Kind() == reflect.Slice {
		before := f.v.Len()
		old := reflect.AppendSlice(reflect.MakeSlice(f.v.Type(), 0, before), f.v)
		if err := setValue(f.v, s); err != nil {
			return err
		}
		f.v.Set(reflect.AppendSlice(old, f.v))
		return nil
	}
	f.set = true
	return setValue(f.v, s)
}

func (f *fieldValue) Type() string { return typeName(f.v.Type()) }

// load applies the YAML file, then DEPUTY_* variables, then the flags given
// on the command line, over an empty config; then fills the defaults and
// validates, once. Errors name the setting's YAML path.
func (l *configLoader) load() (*Config, error) {
	var cfg Config
	// The strings and lists given empty, and where.
	empty := emptyGiven{}
	file := l.file
	if file == "" {
		file = os.Getenv("DEPUTY_CONFIG")
	}
	if file != "" {
		if err := loadYAMLFile(file, &cfg, empty); err != nil {
			return nil, err
		}
	}
	for key, to := range movedToPolicyData {
		if _, ok := os.LookupEnv(envName(key)); ok {
			return nil, sidecar.Invalid(key, "%s: moved to policy data: %s", envName(key), to)
		}
	}
	root := reflect.ValueOf(&cfg).Elem()
	for _, s := range l.settings {
		if s.section || s.yamlOnly {
			continue
		}
		if v, ok := os.LookupEnv(envName(s.path)); ok {
			if err := blankRefused(s.path, v); err != nil {
				return nil, sidecar.Invalid(s.path, "from %s: %v", envName(s.path), sidecar.ErrorMessage(err))
			}
			if err := setValue(root.FieldByIndex(s.index), v); err != nil {
				return nil, sidecar.Invalid(s.path, "from %s: %v", envName(s.path), err)
			}
			if err := zeroRefused(s.path, root.FieldByIndex(s.index)); err != nil {
				return nil, sidecar.Invalid(s.path, "from %s: %v", envName(s.path), err)
			}
			empty.note(s.path, root.FieldByIndex(s.index), givenAt{from: "from " + envName(s.path) + ": "})
		}
	}
	flagged := reflect.ValueOf(&l.flagged).Elem()
	for _, s := range l.settings {
		if s.section || s.yamlOnly {
			continue
		}
		if f := l.flags.Lookup(flagName(s.path)); f != nil && f.Changed {
			root.FieldByIndex(s.index).Set(flagged.FieldByIndex(s.index))
			if err := zeroRefused(s.path, root.FieldByIndex(s.index)); err != nil {
				return nil, sidecar.Invalid(s.path, "from --%s: %v", flagName(s.path), err)
			}
			empty.note(s.path, root.FieldByIndex(s.index), givenAt{from: "from --" + flagName(s.path) + ": "})
		}
	}
	cfg.SetDefaults()
	if err := empty.replaced(l.settings, root); err != nil {
		return nil, err
	}
	if err := empty.inherited(l.covers); err != nil {
		return nil, err
	}
	if len(l.sections) == 0 {
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return &cfg, nil
	}
	for _, s := range l.settings {
		if !s.section || strings.Contains(s.path, ".") {
			continue
		}
		if v, ok := root.FieldByIndex(s.index).Addr().Interface().(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
	}
	return &cfg, nil
}

// movedToPolicyData names the rules that were configuration keys once and
// now live in policy data only, so a file still setting one says where.
var movedToPolicyData = map[string]string{
	"partner.path_template":        "data.deputy.partner.customer_path_prefix",
	"partner.expiring_within_days": "data.deputy.partner.expiring_within_days",
}

// loadYAMLFile decodes file into cfg strictly: an unknown key, a key given
// twice or a value of the wrong kind is an error naming the key's path.
// The strings and lists it gives empty are noted in empty, when not nil.
func loadYAMLFile(file string, cfg *Config, empty emptyGiven) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return sidecar.Invalid("config", "read %s: %v", file, err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return sidecar.Invalid("config", "%s: %v", file, err)
	}
	return decodeYAML(&doc, reflect.ValueOf(cfg).Elem(), "", file, empty)
}

// inline reports whether a field is an embedded struct whose settings
// are its section's own (`yaml:",inline"`).
func inline(sf reflect.StructField) bool {
	return sf.Anonymous && sf.Type.Kind() == reflect.Struct && slices.Contains(strings.Split(sf.Tag.Get("yaml"), ",")[1:], "inline")
}

// yamlFields maps the YAML keys of struct type t to their field indexes,
// an inline struct's keys among them.
func yamlFields(t reflect.Type, index []int, fields map[string][]int) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		idx := append(slices.Clone(index), i)
		if inline(sf) {
			yamlFields(sf.Type, idx, fields)
			continue
		}
		name := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if sf.IsExported() && name != "-" && name != "" {
			fields[name] = idx
		}
	}
}

func decodeYAML(n *yaml.Node, v reflect.Value, path, file string, empty emptyGiven) error {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) == 0 {
			return nil
		} else {
			n = n.Content[0]
		}
	}
	bad := func(format string, args ...any) error {
		field := path
		if field == "" {
			field = "config"
		}
		return sidecar.Invalid(field, "%s (%s:%d)", fmt.Sprintf(format, args...), file, n.Line)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "key:" with nothing: left unset
	}
	t := v.Type()
	switch {
	case t.Kind() == reflect.Struct && t != timeType:
		if n.Kind != yaml.MappingNode {
			return bad("want keys and values")
		}
		fields := map[string][]int{}
		yamlFields(t, nil, fields)
		return decodeMapping(n, path, file, func(key string, val *yaml.Node, p string) error {
			i, ok := fields[key]
			if to, moved := movedToPolicyData[p]; !ok && moved {
				return sidecar.Invalid(p, "unknown key: moved to policy data: %s (%s:%d)", to, file, val.Line)
			}
			if !ok {
				return sidecar.Invalid(p, "unknown key (%s:%d)", file, val.Line)
			}
			return decodeYAML(val, v.FieldByIndex(i), p, file, empty)
		})
	case t.Kind() == reflect.Pointer:
		elem := reflect.New(t.Elem())
		if err := decodeYAML(n, elem.Elem(), path, file, empty); err != nil {
			return err
		}
		v.Set(elem)
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("want a list")
		}
		out := reflect.MakeSlice(t, 0, len(n.Content))
		for i, item := range n.Content {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeYAML(item, ev, fmt.Sprintf("%s[%d]", path, i), file, empty); err != nil {
				return err
			}
			out = reflect.Append(out, ev)
		}
		v.Set(out)
		empty.note(path, v, givenAt{at: fmt.Sprintf(" (%s:%d)", file, n.Line)})
		return nil
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		if n.Kind != yaml.MappingNode {
			return bad("want keys and values")
		}
		m := reflect.MakeMap(t)
		err := decodeMapping(n, path, file, func(key string, val *yaml.Node, p string) error {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeYAML(val, ev, p, file, empty); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), ev)
			return nil
		})
		v.Set(m)
		return err
	}
	if n.Kind != yaml.ScalarNode {
		return bad("want a single %s", typeName(t))
	}
	if err := setValue(v, n.Value); err != nil {
		return bad("%v", err)
	}
	if err := zeroRefused(path, v); err != nil {
		return bad("%v", err)
	}
	empty.note(path, v, givenAt{at: fmt.Sprintf(" (%s:%d)", file, n.Line)})
	return nil
}

// zeroMeansDefault are the numbers whose usage says that 0 takes the
// default: the chart works out the pod's grace period reading 0 so.
var zeroMeansDefault = map[string]bool{
	"shutdown_timeout":           true,
	"decision_log.flush_timeout": true,
}

// zeroInstead says, for a number an operator may set to 0 meaning to turn
// something off or to tighten it, what to set instead.
var zeroInstead = map[string]string{
	"gc_percent":                    "a small percentage such as 25 for the least memory (GOMEMLIMIT bounds it too); -1 turns the GC off, and memory then grows without bound",
	"redis.max_retries":             "-1 for no retries",
	"identity.min_refresh_interval": "a positive interval: at 0 every token of an unknown kid would fetch the key set again",
	"state_cache.ttl":               "a short positive ttl such as 1s: a revoked grant or share is then seen within it",
	"impersonation.cache_ttl":       "a short positive ttl such as 1s",
	"decision_log.max_len":          "a positive length: the stream always fits decision_log.stream_max_bytes",
}

// zeroRefused refuses an explicit 0 (given as v, at path) of a number
// whose 0 SetDefaults reads as unset: Deputy would run on the default,
// often a looser bound (a leeway of 30 s, a key set fetch per junk token
// bounded at 10 s), while the operator believes 0 holds. A setting whose 0
// means something is a pointer, and keeps it; one whose default is 0 loses
// nothing.
func zeroRefused(path string, v reflect.Value) error {
	if !v.IsValid() || !v.IsZero() || zeroMeansDefault[path] {
		return nil
	}
	def := defaultConfig()
	for _, s := range settings(def) {
		if s.path != path || s.index == nil {
			continue
		}
		switch s.typ.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Float64:
		default:
			return nil
		}
		if reflect.ValueOf(def).FieldByIndex(s.index).IsZero() {
			return nil
		}
		instead := zeroInstead[path]
		if instead == "" {
			instead = "a value other than 0"
		}
		return fmt.Errorf("0 would be read as unset and replaced by the default (%s): leave it unset for that, or set %s", s.def, instead)
	}
	return nil
}

// decodeMapping calls f for each key of a mapping node, refusing a key
// given twice: with two values, which one counts is a guess.
func decodeMapping(n *yaml.Node, path, file string, f func(key string, val *yaml.Node, path string) error) error {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if seen[k.Value] {
			return sidecar.Invalid(p, "set twice (%s:%d)", file, k.Line)
		}
		seen[k.Value] = true
		if err := f(k.Value, val, p); err != nil {
			return err
		}
	}
	return nil
}

// nonBlankLists are the list settings a variable or flag may not give as
// blank ("", " ", ","): for them an empty list turns a check off, which a
// templated empty value must not do unnoticed. The file's explicit empty
// list still does.
var nonBlankLists = map[string]bool{
	"identity.credential_carriers":   true,
	"check.method_overrides":         true, // empty: a POST that runs as DELETE is decided as a POST
	"decision_log.mask_query_params": true, // empty: access_token and kin are logged unless a name rule catches them
}

// blankRefused refuses a blank value of a nonBlankLists setting.
func blankRefused(path, s string) error {
	if nonBlankLists[path] && strings.Trim(s, " \t,") == "" {
		return sidecar.Invalid(path, "a blank value %q names no entry; to check none, give an empty list in the configuration file", s)
	}
	return nil
}

// emptyGiven maps each setting given an empty string or list to where.
type emptyGiven map[string]givenAt

// givenAt says where a value was given, around an error's message: from
// a variable or flag before it, at a file's line after it.
type givenAt struct{ from, at string }

// note records v, the value just given at path, as empty or not: a later
// source that sets it forgets an earlier empty one.
func (e emptyGiven) note(path string, v reflect.Value, where givenAt) {
	if e == nil || (v.Kind() != reflect.String && v.Kind() != reflect.Slice) {
		return
	}
	if v.Len() == 0 {
		e[path] = where
	} else {
		delete(e, path)
	}
}

// emptyAdded are the lists to which SetDefaults adds an entry the usage
// names as always there besides the list: given empty, the entry is not a
// default taking the empty list's place.
var emptyAdded = map[string]bool{
	"decision_log.mask_headers": true, // identity.header is masked besides the list
}

// emptyInstead says, for a string or list an operator may give empty
// meaning "none" or "off", what to write instead.
var emptyInstead = map[string]string{
	"log_level":                "debug, info, warn or error",
	"grpc.socket_mode":         "the octal permission bits, such as 0600 or 0660",
	"http.check_proxy":         "nginx, caddy, traefik or envoy",
	"policy.paths":             "list the Rego and data files or directories, or set policy.bundle_file or policy.bundle_url to serve a bundle instead",
	"policy.roots":             "list the data roots a bundle may claim",
	"policy.key_algorithm":     "the algorithm of policy.public_key",
	"identity.algorithms":      "list the algorithms your issuers sign with (RS*, PS*, ES*, EdDSA); to refuse every bearer token, configure no issuer and set identity.anonymous_only",
	"redis.narrowing_replicas": "0 never to wait, or the number of replicas to wait for",
	"decision_log.sink":        "none for no decision log",
}

// replaced refuses a string or list given empty that SetDefaults, which
// reads empty as unset, filled: Deputy would run on the default (the three
// default algorithms for identity.algorithms: []) while the operator
// believes the empty value holds. A setting whose empty value means
// something has SetDefaults tell nil from empty, and keeps it.
func (e emptyGiven) replaced(settings []setting, root reflect.Value) error {
	for _, s := range settings {
		where, ok := e[s.path]
		if !ok || s.section || s.yamlOnly || emptyAdded[s.path] {
			continue
		}
		v := root.FieldByIndex(s.index)
		if (v.Kind() != reflect.String && v.Kind() != reflect.Slice) || v.Len() == 0 {
			continue
		}
		instead := emptyInstead[s.path]
		if instead == "" && v.Kind() == reflect.Slice {
			instead = "list the entries you mean"
		} else if instead == "" {
			instead = "the value you mean"
		}
		msg := fmt.Sprintf("empty would be read as unset and replaced by the default (%s): leave it unset for that, or set %s", formatValue(v), instead)
		if v.Kind() == reflect.Slice {
			msg = fmt.Sprintf("an empty list would be read as unset and replaced by the default (%s): leave it unset for that, or %s", formatValue(v), instead)
		}
		return sidecar.Invalid(s.path, "%s%s%s", where.from, msg, where.at)
	}
	return nil
}

// listIndex is a list item's index in a setting's path: issuers[0].
var listIndex = regexp.MustCompile(`\[[0-9]+\]`)

// inheritedFrom names the setting whose value an item of a list of objects
// takes for item (a path as issuers[].audiences) left unset, or "".
func inheritedFrom(item string) string {
	switch {
	case item == "identity.issuers[].audiences":
		return "identity.audiences"
	case strings.HasPrefix(item, "identity.issuers[].claims."):
		return "identity.claims." + strings.TrimPrefix(item, "identity.issuers[].claims.")
	}
	return ""
}

// inherited refuses a list item's string or list given empty where the
// item takes another setting's value for it unset: an issuer's
// audiences: [] accepted identity.audiences, and its claims: {roles: ""}
// read roles from identity.claims.roles, the claim the operator meant not
// to read from that issuer.
func (e emptyGiven) inherited(covers func(string) bool) error {
	for _, p := range slices.Sorted(maps.Keys(e)) {
		from := inheritedFrom(listIndex.ReplaceAllString(p, "[]"))
		if from == "" || !covers(p) {
			continue
		}
		where := e[p]
		return sidecar.Invalid(p, "%sempty would be read as unset and take %s: leave it unset for that, or set the value this issuer's tokens need%s", where.from, from, where.at)
	}
	return nil
}

// setValue parses s, as written in an environment variable, a flag or a
// YAML scalar, into f.
func setValue(f reflect.Value, s string) error {
	switch {
	case f.Kind() == reflect.Pointer:
		elem := reflect.New(f.Type().Elem())
		if err := setValue(elem.Elem(), s); err != nil {
			return err
		}
		f.Set(elem)
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (like 30s, 5m, 1h): %q", s)
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean (true or false): %q", s)
		}
		f.SetBool(b)
	case f.CanInt():
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(n)
	case f.CanUint():
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not a non-negative integer: %q", s)
		}
		f.SetUint(n)
	case f.CanFloat():
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		f.SetFloat(n)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		out := reflect.MakeSlice(f.Type(), 0, 4)
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = reflect.Append(out, reflect.ValueOf(part).Convert(f.Type().Elem()))
			}
		}
		f.Set(out)
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
