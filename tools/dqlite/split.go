package main

import "strings"

// Statement splitting, the way SQLite's own sqlite3_complete() decides where
// a statement ends (src/complete.c): a ';' ends a statement unless it is
// inside a string, an identifier quote, a comment, or the body of a
// CREATE TRIGGER ... END. The stock `dqlite` shell splits on every ';' and
// so cannot create a trigger; this keeps every statement whole.

const (
	tkSEMI = iota
	tkWS
	tkOTHER
	tkEXPLAIN
	tkCREATE
	tkTEMP
	tkTRIGGER
	tkEND
)

// trans[state][token] -> state; states: 0 invalid, 1 start, 2 normal,
// 3 explain, 4 create, 5 trigger, 6 semi (inside a trigger), 7 end.
var trans = [8][8]int{
	{1, 0, 2, 3, 4, 2, 2, 2},
	{1, 1, 2, 3, 4, 2, 2, 2},
	{1, 2, 2, 2, 2, 2, 2, 2},
	{1, 3, 3, 2, 4, 2, 2, 2},
	{1, 4, 2, 2, 2, 4, 5, 2},
	{6, 5, 5, 5, 5, 5, 5, 5},
	{6, 6, 5, 5, 5, 5, 5, 7},
	{1, 7, 5, 5, 5, 5, 5, 5},
}

func idChar(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// splitStatements returns the complete statements of sql, each with its
// final ';', comments and blank lines between statements dropped. rest is
// what follows the last complete statement (non-empty means an incomplete
// statement at the end).
func splitStatements(sql string) (stmts []string, rest string) {
	state := 0
	start := 0      // where the current statement's text begins
	begun := false  // a non-whitespace, non-comment token was seen
	i := 0
	n := len(sql)
	for i < n {
		c := sql[i]
		tok := tkOTHER
		tokStart := i
		switch {
		case c == ';':
			tok = tkSEMI
			i++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			tok = tkWS
			i++
		case c == '/' && i+1 < n && sql[i+1] == '*':
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return stmts, sql[start:]
			}
			i += 2 + j + 2
			tok = tkWS
		case c == '-' && i+1 < n && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = n
			} else {
				i += j + 1
			}
			tok = tkWS
		case c == '[':
			j := strings.IndexByte(sql[i+1:], ']')
			if j < 0 {
				return stmts, sql[start:]
			}
			i += 1 + j + 1
		case c == '`' || c == '"' || c == '\'':
			// A doubled quote inside is two adjacent quoted tokens: same result.
			j := strings.IndexByte(sql[i+1:], c)
			if j < 0 {
				return stmts, sql[start:]
			}
			i += 1 + j + 1
		case idChar(c):
			j := i
			for j < n && idChar(sql[j]) {
				j++
			}
			switch strings.ToLower(sql[i:j]) {
			case "create":
				tok = tkCREATE
			case "temp", "temporary":
				tok = tkTEMP
			case "trigger":
				tok = tkTRIGGER
			case "end":
				tok = tkEND
			case "explain":
				tok = tkEXPLAIN
			}
			i = j
		default:
			i++
		}
		if tok != tkWS && tok != tkSEMI && !begun {
			begun = true
			start = tokStart
		}
		state = trans[state][tok]
		if tok == tkSEMI && state == 1 {
			if begun {
				stmts = append(stmts, sql[start:i])
			}
			begun = false
			start = i
		}
	}
	if begun {
		return stmts, strings.TrimSpace(sql[start:])
	}
	return stmts, ""
}

// firstKeyword is the statement's first word, upper-cased.
func firstKeyword(stmt string) string {
	s := strings.TrimSpace(stmt)
	j := 0
	for j < len(s) && idChar(s[j]) {
		j++
	}
	return strings.ToUpper(s[:j])
}
