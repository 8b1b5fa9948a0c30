// Syntax highlighting for Cedar policies (.cedar) and the Cedar schema
// format (.cedarschema), as CodeMirror stream languages. No maintained
// CodeMirror 6 package for Cedar exists; the grammar is small enough that a
// tokenizer covers it: comments, strings, annotations, keywords, entity
// type paths (`Crm::Action::"login"`), attributes after `.`, numbers and
// operators.
import { StreamLanguage } from '@codemirror/language';

const POLICY_KEYWORDS = new Set([
  'permit', 'forbid', 'when', 'unless', 'principal', 'action', 'resource', 'context',
  'in', 'has', 'like', 'is', 'if', 'then', 'else',
]);
const SCHEMA_KEYWORDS = new Set([
  'namespace', 'entity', 'action', 'type', 'appliesTo', 'principal', 'resource', 'context',
  'in', 'tags', 'enum',
]);
const ATOMS = new Set(['true', 'false']);
const BUILTIN_TYPES = new Set(['Bool', 'Boolean', 'Long', 'String', 'Set', 'Record', 'Entity', 'Extension', '__cedar']);

function tokenizer(keywords, schema) {
  return {
    name: schema ? 'cedarschema' : 'cedar',
    startState: () => ({ afterDot: false, afterPath: false }),
    token(stream, state) {
      if (stream.eatSpace()) return null;
      const afterDot = state.afterDot;
      const afterPath = state.afterPath;
      state.afterDot = false;
      state.afterPath = false;

      if (stream.match('//')) {
        stream.skipToEnd();
        return 'comment';
      }
      if (stream.peek() === '"') {
        stream.next();
        let escaped = false;
        for (let ch = stream.next(); ch != null; ch = stream.next()) {
          if (ch === '"' && !escaped) break;
          escaped = !escaped && ch === '\\';
        }
        return 'string';
      }
      if (stream.match(/^@[A-Za-z_][A-Za-z0-9_]*/)) return 'meta';
      if (stream.match(/^-?[0-9]+/)) return 'number';
      if (stream.match('::')) {
        state.afterPath = true;
        return 'punctuation';
      }
      const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
      if (word) {
        const w = word[0];
        if (afterDot) return 'propertyName';
        if (stream.match('::', false) || afterPath) return 'typeName';
        if (ATOMS.has(w)) return 'atom';
        if (keywords.has(w)) return 'keyword';
        if (BUILTIN_TYPES.has(w) || /^[A-Z]/.test(w)) return 'typeName';
        // in a schema, `name:` and `name?:` declare attributes
        if (schema && stream.match(/^\??\s*:/, false)) return 'propertyName';
        return 'variableName';
      }
      if (stream.eat('.')) {
        state.afterDot = true;
        return 'punctuation';
      }
      if (stream.match(/^(==|!=|<=|>=|&&|\|\||[<>!+\-*])/)) return 'operator';
      stream.next();
      return 'punctuation';
    },
    languageData: { commentTokens: { line: '//' } },
  };
}

/** Cedar policies. */
export const cedar = StreamLanguage.define(tokenizer(POLICY_KEYWORDS, false));
/** The Cedar schema format. */
export const cedarSchema = StreamLanguage.define(tokenizer(SCHEMA_KEYWORDS, true));
