package yamlfile

import (
	"testing"
	"time"
)

type fuzzConfig struct {
	Name  string            `yaml:"name"`
	N     int8              `yaml:"n"`
	U     uint              `yaml:"u"`
	F     float32           `yaml:"f"`
	B     bool              `yaml:"b"`
	D     time.Duration     `yaml:"d"`
	P     *fuzzConfig       `yaml:"p"`
	L     []fuzzConfig      `yaml:"l"`
	M     map[string]string `yaml:"m"`
	K     map[int]bool      `yaml:"k"`
	Level level             `yaml:"level"`
	Any   any               `yaml:"any"`
	base  `yaml:",inline"`
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"",
		"name: x\nn: 1\nu: 2\nf: 1.5\nb: true\nd: 1s\n",
		"p: {p: {name: deep}}\nl: [{name: a}, {n: 300}]\n",
		"m: {a: ${HOST}, b: ${NOPE:-x}, c: $${y}}\nk: {1: true}\n",
		"a: &a {name: x}\np: *a\nl: [*a, {<<: *a, n: 2}]\n",
		"name: ${\nn: abc\nd: 30\nbogus: 1\nname: dup\n",
		"level: high\nany: {x: [1, 2, {y: z}]}\nversion: 3\n",
		"- 1\n- 2\n",
		"a: 1\n---\nb: 2\n",
		"x: &x [*x]\n",
		"? [a]\n: 1\n",
		"{a: 1, a: 2}",
		"<<: [{name: a}, {n: 1}]\n",
		"n: 0x7f\nu: 0b101\nf: -.inf\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var c fuzzConfig
		doc, err := Decode("fuzz.yaml", []byte(src), &c, Options{LookupEnv: lookup})
		if err != nil {
			_ = err.Error()
			if es, ok := err.(Errors); ok && len(es) > maxErrors+1 {
				t.Fatalf("%d errors, want at most %d", len(es), maxErrors+1)
			}
		}
		if doc == nil {
			t.Fatal("nil Doc")
		}
		doc.Line("l[0].p.name")
		var m map[string]any
		Decode("fuzz.yaml", []byte(src), &m, Options{LookupEnv: lookup})
	})
}
