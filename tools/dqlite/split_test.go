package main

import (
	"os"
	"strings"
	"testing"
)

func TestSplitKeepsTriggersWhole(t *testing.T) {
	sql := `-- a comment; with a semicolon
SAVEPOINT x;
CREATE TABLE "a;b" (v TEXT DEFAULT 'x;y');
CREATE TEMP TRIGGER t AFTER INSERT ON "a;b" BEGIN
  UPDATE "a;b" SET v = 'end;'; /* ; */
  SELECT RAISE(ABORT, 'no; never');
END;
CREATE VIEW v AS SELECT [weird;name] FROM "a;b";
RELEASE x;
SELECT 1`
	stmts, rest := splitStatements(sql)
	if len(stmts) != 5 {
		t.Fatalf("want 5 statements, got %d: %q", len(stmts), stmts)
	}
	if !strings.HasPrefix(stmts[2], "CREATE TEMP TRIGGER") || !strings.HasSuffix(stmts[2], "END;") {
		t.Fatalf("trigger not whole: %q", stmts[2])
	}
	if rest != "SELECT 1" {
		t.Fatalf("rest %q", rest)
	}
	keep, dropped, err := installStatements(sql + ";")
	if err != nil || len(keep) != 4 || len(dropped) != 2 {
		t.Fatalf("install statements: %d kept, %d dropped, %v", len(keep), len(dropped), err)
	}
}

// The checked-in install SQL splits into complete statements, every trigger whole.
func TestSplitInstallSQL(t *testing.T) {
	b, err := os.ReadFile("../../sql/install.sql")
	if err != nil {
		t.Skip("sql/install.sql not found from here")
	}
	keep, dropped, err := installStatements(string(b))
	if err != nil {
		t.Fatal(err)
	}
	triggers := 0
	for _, s := range keep {
		if strings.HasPrefix(s, "CREATE TRIGGER") {
			triggers++
			if !strings.HasSuffix(s, "END;") {
				t.Fatalf("trigger cut: %.80q", s)
			}
		}
	}
	if triggers < 4 || len(dropped) != 2 {
		t.Fatalf("%d triggers, %d dropped", triggers, len(dropped))
	}
}
