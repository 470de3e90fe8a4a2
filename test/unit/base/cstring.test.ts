/**
 * C string emulation (cstring.ts): strcasecmp's ASCII-only folding, strlen
 * of UTF-8, the byte length of a value as the daemon holds it, JSON strings
 * as nfqlb prints them (and always valid JSON), and mkargv's strtok split.
 */
import { asciiLower, byteLength, cStrlen, jsonString, mkargv } from '../../../src/base/cstring';

const bytesOf = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
const wire = (listing: string): string => Buffer.from(listing, 'latin1').toString('utf8');

describe('C strings', () => {
  test('asciiLower folds A-Z only', () => {
    expect(asciiLower('SCTP,Tcp')).toBe('sctp,tcp');
    expect(asciiLower('ÉÀ-İ')).toBe('ÉÀ-İ');
    expect(asciiLower('[@Z`]')).toBe('[@z`]');
  });

  test('cStrlen counts UTF-8 bytes; byteLength counts a byte string by chars and text above 0xff as UTF-8', () => {
    expect(cStrlen('é€')).toBe(5);
    expect(cStrlen('')).toBe(0);
    expect(byteLength('\xc3\xa9')).toBe(2); // a byte string, as the server reads it (latin1)
    expect(byteLength('é')).toBe(1); // U+00E9 is one byte of a byte string
    expect(byteLength('é€')).toBe(5); // text: a char above 0xff makes all of it UTF-8
  });

  test('jsonString: RFC 8259 escapes, plain names unchanged, bytes that are not UTF-8 become U+FFFD', () => {
    expect(jsonString('tshm-a_1.x')).toBe('"tshm-a_1.x"');
    expect(jsonString('a"b\\c\n\t\b\f\r\u0000\u001f')).toBe('"a\\"b\\\\c\\n\\t\\b\\f\\r\\u0000\\u001f"');
    expect(jsonString(bytesOf('café'))).toBe(`"${bytesOf('café')}"`);
    expect(wire(jsonString('\xff\xfe'))).toBe('"\ufffd\ufffd"');
    expect(jsonString('\u007f')).toBe('"\u007f"');
  });


  test('jsonString output always parses back to the text', () => {
    for (const s of ['', 'plain', 'q"uote', 'back\\slash', '\u0000\u0001\u001f\u007f', 'tab\tnl\n', 'x'.repeat(300)]) {
      expect(JSON.parse(jsonString(s))).toBe(s);
    }
    expect(JSON.parse(wire(jsonString(bytesOf('café €'))))).toBe('café €');
  });

  test('mkargv: strtok on any delimiter, empty tokens dropped, nothing left is null', () => {
    expect(mkargv('tcp, udp,,sctp ', ', ')).toEqual(['tcp', 'udp', 'sctp']);
    expect(mkargv('a b', ',')).toEqual(['a b']);
    expect(mkargv(',, ,', ', ')).toBeNull();
    expect(mkargv('', ',')).toBeNull();
    expect(mkargv(undefined, ',')).toBeNull();
  });
});
