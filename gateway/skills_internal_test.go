package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// FuzzScreenSkillPage: whatever skills/list result an upstream sends, the
// screen either refuses it or returns valid JSON whose skills are a subset
// of the upstream's, in order, each kept byte for byte, with a string uri
// and no case variant of a member the gateway reads.
func FuzzScreenSkillPage(f *testing.F) {
	f.Add(`{"skills":[{"uri":"skill://a/SKILL.md","frontmatter":{"name":"a","description":"d"},"resources":[{"uri":"skill://a/SKILL.md","digest":"sha256:00","size":1}]}],"nextCursor":"c"}`)
	f.Add(`{"skills":[{"uri":"skill://a/SKILL.md","URI":"skill://b/SKILL.md"},{"uri":1},{"uri":"skill://c/SKILL.md","resources":"dynamic"},"x"]}`)
	f.Add(`{"skills":"not a list","ttlMs":0}`)
	f.Add(`{"Skills":[],"skills":[{"uri":"skill://a/SKILL.md","Resources":[]}]}`)
	f.Add(`[1]`)
	s := &Server{log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, result string) {
		out, err := s.screenSkillPage(context.Background(), "up", []byte(result))
		if err != nil {
			return
		}
		if json.Valid([]byte(result)) && !json.Valid(out) {
			t.Fatalf("screened %q into invalid JSON %q", result, out)
		}
		before, err := readSkillPage([]byte(result))
		if err != nil || before.at < 0 {
			if string(out) != result {
				t.Fatalf("a page without skills changed: %q -> %q", result, out)
			}
			return
		}
		after, err := readSkillPage(out)
		if err != nil {
			t.Fatalf("screened page unreadable: %v (%q)", err, out)
		}
		i := 0
		for _, kept := range after.items {
			if _, ok := readSkillItem(kept); !ok {
				t.Fatalf("kept an ambiguous entry %q", kept)
			}
			for i < len(before.items) && string(before.items[i]) != string(kept) {
				i++
			}
			if i == len(before.items) {
				t.Fatalf("kept %q, which is not the upstream's (in order)", kept)
			}
			i++
		}
	})
}

// TestSkillNaming: on a federated route a skill is named as the resource
// its URI is, its files prefixed exactly when its URI is, in every prefix
// mode; the prefixed form routes back to the member.
func TestSkillNaming(t *testing.T) {
	page := func(skills ...string) json.RawMessage {
		var entries []string
		for _, name := range skills {
			entries = append(entries, `{"uri":"skill://`+name+`/SKILL.md","frontmatter":{"name":"`+name+`"},"resources":[{"uri":"skill://`+name+`/SKILL.md"},{"uri":"skill://`+name+`/a.md"}]}`)
		}
		return json.RawMessage(`{"skills":[` + strings.Join(entries, ",") + `]}`)
	}
	tests := []struct {
		mode string
		want []string
	}{
		{config.PrefixAlways, []string{
			"a+skill://pdf/SKILL.md", "a+skill://pdf/SKILL.md", "a+skill://pdf/a.md",
			"b+skill://pdf/SKILL.md", "b+skill://pdf/SKILL.md", "b+skill://pdf/a.md",
			"b+skill://csv/SKILL.md", "b+skill://csv/SKILL.md", "b+skill://csv/a.md",
		}},
		{config.PrefixCollision, []string{
			"a+skill://pdf/SKILL.md", "a+skill://pdf/SKILL.md", "a+skill://pdf/a.md",
			"b+skill://pdf/SKILL.md", "b+skill://pdf/SKILL.md", "b+skill://pdf/a.md",
			"skill://csv/SKILL.md", "skill://csv/SKILL.md", "skill://csv/a.md",
		}},
		{config.PrefixNever, []string{
			"skill://pdf/SKILL.md", "skill://pdf/SKILL.md", "skill://pdf/a.md",
			"skill://csv/SKILL.md", "skill://csv/SKILL.md", "skill://csv/a.md",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			n := newNamer(tt.mode, "__", []string{"a", "b"})
			merged, _, err := mergePages(n, listShapes["skills/list"], []memberPage{{member: "a", result: page("pdf")}, {member: "b", result: page("pdf", "csv")}})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, raw := range merged.items {
				var e struct {
					URI       string
					Resources []struct{ URI string }
				}
				if err := json.Unmarshal(raw, &e); err != nil {
					t.Fatal(err)
				}
				got = append(got, e.URI)
				for _, r := range e.Resources {
					got = append(got, r.URI)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("merged skills (-want +got):\n%s", diff)
			}
			// Every name routes back: the skill's as a skill, every one as
			// the resource (file) it is.
			for _, name := range got {
				wantMember, wantOwn, prefixed := strings.Cut(name, "+")
				if !prefixed {
					wantMember, wantOwn = "", name
				}
				for _, kind := range []string{kindSkill, kindResource} {
					member, own, ok := n.inward(kind, name)
					if !ok || own != wantOwn || prefixed && member != wantMember {
						t.Errorf("inward(%s, %q) = %q, %q, %v; want %q, %q", kind, name, member, own, ok, wantMember, wantOwn)
					}
				}
			}
		})
	}
}

// TestSkillPins: a skill is pinned when first seen (mode record), kept
// across a restart through the pin file's skills map, and quarantined when
// its entry changes; in mode file an unpinned skill is quarantined.
func TestSkillPins(t *testing.T) {
	entry := func(digest string) skillItem {
		raw := jsontext.Value(`{"uri":"skill://pdf/SKILL.md","resources":[{"uri":"skill://pdf/SKILL.md","digest":"sha256:` + digest + `","size":1}]}`)
		item, ok := readSkillItem(raw)
		if !ok {
			t.Fatal("entry unreadable")
		}
		return item
	}
	file := filepath.Join(t.TempDir(), "pins.json")
	record := func() *pinSet {
		st, err := newPinStore([]config.Upstream{{Name: "up", PinTools: &config.PinTools{Mode: config.PinRecord, File: file}}})
		if err != nil {
			t.Fatal(err)
		}
		return st.set("up")
	}
	set := record()
	if q, err := set.screenSkills(context.Background(), []skillItem{entry("aa")}); q[0] || err != nil {
		t.Fatalf("first sight: quarantined %v, %v", q, err)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), `"skills"`) {
		t.Fatalf("pin file without skills: %s", b)
	}
	restarted := record()
	if got := restarted.skillStatus("skill://pdf/SKILL.md"); got != PinPinned {
		t.Errorf("after a restart: %q, want pinned", got)
	}
	if q, _ := restarted.screenSkills(context.Background(), []skillItem{entry("bb")}); !q[0] || restarted.skillStatus("skill://pdf/SKILL.md") != PinChanged {
		t.Errorf("changed digest: quarantined %v, status %q", q, restarted.skillStatus("skill://pdf/SKILL.md"))
	}
	if _, err := restarted.approveSkill(context.Background(), "skill://pdf/SKILL.md"); err != nil || restarted.skillStatus("skill://pdf/SKILL.md") != PinPinned {
		t.Errorf("approve: %v, status %q", err, restarted.skillStatus("skill://pdf/SKILL.md"))
	}
	strict := &pinSet{mode: config.PinFile}
	if q, _ := strict.screenSkills(context.Background(), []skillItem{entry("aa")}); !q[0] {
		t.Errorf("mode file, unpinned skill: not quarantined")
	}
}
