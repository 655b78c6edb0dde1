// Hive workflow JS runtime: n8n's expression globals ($json, $input, $(), $node, ...), n8n's data
// transformation functions and the Code node runner. Loaded once per V8 isolate after Luxon.
// Nothing here reaches the host: the isolate has no file, network or process access.
(function (root) {
  'use strict';

  const { DateTime, Duration, Interval, Settings } = luxon;

  class ExpressionError extends Error {
    constructor(message, description) {
      super(message);
      this.name = 'ExpressionError';
      this.description = description || null;
      this.hiveExpressionError = true;
    }
  }

  const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) &&
    !(v instanceof Date) && !DateTime.isDateTime(v);

  // ------------------------------------------------------------------ data transformation functions

  function define(proto, name, fn) {
    Object.defineProperty(proto, name, { value: fn, writable: true, configurable: true, enumerable: false });
  }

  function extErr(message, description) { return new ExpressionError(message, description); }

  const toDateTime = (value, format) => {
    if (DateTime.isDateTime(value)) return value;
    if (value instanceof Date) return DateTime.fromJSDate(value);
    if (typeof value === 'number') {
      // n8n: numbers are milliseconds unless they look like seconds
      return value > 1e11 || value < -1e11 ? DateTime.fromMillis(value) : DateTime.fromSeconds(value);
    }
    const s = String(value).trim();
    if (format) {
      const dt = DateTime.fromFormat(s, format);
      if (dt.isValid) return dt;
      throw extErr(`can't convert "${s}" with format "${format}" to a date`, dt.invalidExplanation);
    }
    for (const parse of [DateTime.fromISO, DateTime.fromRFC2822, DateTime.fromHTTP, DateTime.fromSQL]) {
      const dt = parse.call(DateTime, s);
      if (dt.isValid) return dt;
    }
    if (/^-?\d+(\.\d+)?$/.test(s)) return toDateTime(Number(s));
    const ms = Date.parse(s);
    if (!Number.isNaN(ms)) return DateTime.fromMillis(ms);
    throw extErr(`can't convert "${s}" to a date`);
  };

  const numberOrThrow = (value, kind) => {
    const n = kind === 'int' ? parseInt(String(value).replace(/_/g, ''), 10) : parseFloat(String(value).replace(/_/g, ''));
    if (Number.isNaN(n)) throw extErr(`cannot convert to number: "${value}"`);
    return n;
  };

  const isEmptyValue = (v) => v === null || v === undefined || v === '' ||
    (Array.isArray(v) && v.length === 0) || (isPlainObject(v) && Object.keys(v).length === 0);

  const titleCase = (s) => s.toLowerCase().replace(/(^|[\s\-_])(\p{L})/gu, (m, sep, c) => sep + c.toUpperCase());
  const words = (s) => String(s).replace(/([a-z0-9])([A-Z])/g, '$1 $2').split(/[^\p{L}\p{N}]+/u).filter(Boolean);

  // String
  const S = String.prototype;
  define(S, 'isEmpty', function () { return this.length === 0; });
  define(S, 'isNotEmpty', function () { return this.length > 0; });
  define(S, 'toInt', function () { return numberOrThrow(this, 'int'); });
  define(S, 'toFloat', function () { return numberOrThrow(this, 'float'); });
  define(S, 'toNumber', function () {
    const s = String(this).trim();
    if (s === '' || Number.isNaN(Number(s))) throw extErr(`cannot convert to number: "${s}"`);
    return Number(s);
  });
  define(S, 'toWholeNumber', function () { return Math.trunc(numberOrThrow(this, 'float')); });
  define(S, 'toBoolean', function () {
    const s = String(this).trim().toLowerCase();
    return !(s === '' || s === 'false' || s === '0' || s === 'no' || s === 'n' || s === 'off');
  });
  define(S, 'toDate', function () { return toDateTime(String(this)).toJSDate(); });
  define(S, 'toDateTime', function (format) { return toDateTime(String(this), format); });
  define(S, 'toJsonString', function () { return JSON.stringify(String(this)); });
  define(S, 'parseJson', function () {
    try { return JSON.parse(String(this)); } catch (e) { throw extErr('could not parse JSON', e.message); }
  });
  define(S, 'isNumeric', function () { const s = String(this).trim(); return s !== '' && !Number.isNaN(Number(s)); });
  define(S, 'isEmail', function () { return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(String(this)); });
  define(S, 'isUrl', function () { return /^(https?|ftp):\/\/[^\s/$.?#].[^\s]*$/i.test(String(this)); });
  define(S, 'isDomain', function () { return /^(?!-)([a-z0-9-]{1,63}\.)+[a-z]{2,}$/i.test(String(this)); });
  define(S, 'extractEmail', function () { const m = String(this).match(/[^\s@<>"'(),;:]+@[^\s@<>"'(),;:]+\.[a-z]{2,}/i); return m ? m[0] : undefined; });
  define(S, 'extractUrl', function () { const m = String(this).match(/(https?|ftp):\/\/[^\s"'<>]+/i); return m ? m[0] : undefined; });
  define(S, 'extractDomain', function () {
    const s = String(this);
    const m = s.match(/^(?:[a-z]+:\/\/)?(?:[^@\s/]+@)?([^:/?#\s]+)/i);
    return m ? m[1] : undefined;
  });
  define(S, 'removeTags', function () { return String(this).replace(/<[^>]*>?/g, ''); });
  define(S, 'removeMarkdown', function () {
    return String(this).replace(/```[\s\S]*?```/g, '').replace(/`([^`]*)`/g, '$1').replace(/!\[[^\]]*\]\([^)]*\)/g, '')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/^#{1,6}\s*/gm, '').replace(/(\*\*|__)(.*?)\1/g, '$2')
      .replace(/(\*|_)(.*?)\1/g, '$2').replace(/^\s*[-*+]\s+/gm, '').replace(/^>\s?/gm, '');
  });
  define(S, 'replaceSpecialChars', function () { return String(this).normalize('NFD').replace(/[\u0300-\u036f]/g, ''); });
  define(S, 'toTitleCase', function () { return titleCase(String(this)); });
  define(S, 'toSentenceCase', function () {
    const s = String(this).toLowerCase();
    return s.replace(/(^\s*\p{L}|[.!?]\s+\p{L})/gu, (m) => m.toUpperCase());
  });
  define(S, 'toSnakeCase', function () { return words(this).map((w) => w.toLowerCase()).join('_'); });
  define(S, 'toCamelCase', function () {
    return words(this).map((w, i) => (i === 0 ? w.toLowerCase() : w[0].toUpperCase() + w.slice(1).toLowerCase())).join('');
  });
  define(S, 'quote', function (mark = '"') { return mark + String(this).replace(new RegExp(mark, 'g'), '\\' + mark) + mark; });
  define(S, 'urlEncode', function (entireString = false) { return entireString ? encodeURI(String(this)) : encodeURIComponent(String(this)); });
  define(S, 'urlDecode', function (entireString = false) { return entireString ? decodeURI(String(this)) : decodeURIComponent(String(this)); });
  define(S, 'base64Encode', function () {
    const bytes = new TextEncoderLite().encode(String(this));
    return base64FromBytes(bytes);
  });
  define(S, 'base64Decode', function () { return new TextEncoderLite().decode(bytesFromBase64(String(this))); });

  // minimal UTF-8 codec (bare V8 has no TextEncoder)
  function TextEncoderLite() {}
  TextEncoderLite.prototype.encode = (s) => {
    const out = [];
    for (const ch of s) {
      let c = ch.codePointAt(0);
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return out;
  };
  TextEncoderLite.prototype.decode = (bytes) => {
    let s = '';
    for (let i = 0; i < bytes.length;) {
      const b = bytes[i];
      let c;
      if (b < 0x80) { c = b; i += 1; } else if (b < 0xe0) { c = ((b & 31) << 6) | (bytes[i + 1] & 63); i += 2; } else if (b < 0xf0) {
        c = ((b & 15) << 12) | ((bytes[i + 1] & 63) << 6) | (bytes[i + 2] & 63); i += 3;
      } else { c = ((b & 7) << 18) | ((bytes[i + 1] & 63) << 12) | ((bytes[i + 2] & 63) << 6) | (bytes[i + 3] & 63); i += 4; }
      s += String.fromCodePoint(c);
    }
    return s;
  };
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  function base64FromBytes(bytes) {
    let out = '';
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] + (i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=') + (i + 2 < bytes.length ? B64[n & 63] : '=');
    }
    return out;
  }
  function bytesFromBase64(s) {
    const clean = s.replace(/[^A-Za-z0-9+/]/g, '');
    const out = [];
    for (let i = 0; i < clean.length; i += 4) {
      const n = (B64.indexOf(clean[i]) << 18) | (B64.indexOf(clean[i + 1]) << 12) |
        ((clean[i + 2] ? B64.indexOf(clean[i + 2]) : 0) << 6) | (clean[i + 3] ? B64.indexOf(clean[i + 3]) : 0);
      out.push((n >> 16) & 255);
      if (clean[i + 2]) out.push((n >> 8) & 255);
      if (clean[i + 3]) out.push(n & 255);
    }
    return out;
  }
  root.btoa = root.btoa || ((s) => base64FromBytes(Array.from(String(s), (c) => c.charCodeAt(0) & 255)));
  root.atob = root.atob || ((s) => String.fromCharCode(...bytesFromBase64(String(s))));

  // Number
  const N = Number.prototype;
  define(N, 'round', function (decimals = 0) { const f = 10 ** decimals; return Math.round(this * f) / f; });
  define(N, 'floor', function () { return Math.floor(this); });
  define(N, 'ceil', function () { return Math.ceil(this); });
  define(N, 'abs', function () { return Math.abs(this); });
  define(N, 'isEven', function () { return Number(this) % 2 === 0; });
  define(N, 'isOdd', function () { return Math.abs(Number(this) % 2) === 1; });
  define(N, 'isInteger', function () { return Number.isInteger(Number(this)); });
  define(N, 'isEmpty', function () { return false; });
  define(N, 'isNotEmpty', function () { return true; });
  define(N, 'toInt', function () { return Math.trunc(this); });
  define(N, 'toFloat', function () { return Number(this); });
  define(N, 'toBoolean', function () { return Number(this) !== 0; });
  define(N, 'toDateTime', function (format) {
    if (format === 'ms') return DateTime.fromMillis(Number(this));
    if (format === 's') return DateTime.fromSeconds(Number(this));
    if (format === 'us') return DateTime.fromMillis(Number(this) / 1000);
    if (format === 'excel') return DateTime.fromMillis((Number(this) - 25569) * 86400000, { zone: 'UTC' });
    return toDateTime(Number(this));
  });
  define(N, 'format', function (locale, options) { return new Intl.NumberFormat(locale, options).format(Number(this)); });
  define(N, 'toJsonString', function () { return JSON.stringify(Number(this)); });

  // Boolean
  const B = Boolean.prototype;
  define(B, 'toInt', function () { return this.valueOf() ? 1 : 0; });
  define(B, 'toNumber', function () { return this.valueOf() ? 1 : 0; });
  define(B, 'isEmpty', function () { return false; });
  define(B, 'isNotEmpty', function () { return true; });

  // Array
  const A = Array.prototype;
  const numbers = (arr, fn) => {
    if (arr.some((v) => typeof v !== 'number')) throw extErr(`${fn}(): all array elements must be numbers`);
    return arr;
  };
  define(A, 'first', function () { return this[0]; });
  define(A, 'last', function () { return this[this.length - 1]; });
  define(A, 'isEmpty', function () { return this.length === 0; });
  define(A, 'isNotEmpty', function () { return this.length > 0; });
  define(A, 'sum', function () { return numbers(this, 'sum').reduce((a, b) => a + b, 0); });
  define(A, 'min', function () { return Math.min(...numbers(this, 'min')); });
  define(A, 'max', function () { return Math.max(...numbers(this, 'max')); });
  define(A, 'average', function () { return this.length ? numbers(this, 'average').reduce((a, b) => a + b, 0) / this.length : NaN; });
  define(A, 'compact', function () { return this.filter((v) => !isEmptyValue(v)).map((v) => (isPlainObject(v) ? v.compact() : v)); });
  define(A, 'unique', function (...fields) {
    const seen = new Set();
    return this.filter((v) => {
      const key = JSON.stringify(fields.length && isPlainObject(v) ? fields.map((f) => v[f]) : v);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  });
  define(A, 'removeDuplicates', A.unique);
  define(A, 'pluck', function (...fields) {
    return this.filter(isPlainObject).map((o) => {
      if (fields.length === 0) return o;
      if (fields.length === 1) return o[fields[0]];
      const out = {};
      for (const f of fields) if (f in o) out[f] = o[f];
      return out;
    });
  });
  define(A, 'chunk', function (size) {
    if (!(size > 0)) throw extErr('chunk(): size must be a positive number');
    const out = [];
    for (let i = 0; i < this.length; i += size) out.push(this.slice(i, i + size));
    return out;
  });
  const key = (v) => JSON.stringify(v);
  define(A, 'difference', function (other) { const o = new Set(other.map(key)); return this.filter((v) => !o.has(key(v))); });
  define(A, 'intersection', function (other) { const o = new Set(other.map(key)); return this.filter((v) => o.has(key(v))).unique(); });
  define(A, 'union', function (other) { return this.concat(other).unique(); });
  define(A, 'append', function (...values) { return this.concat(values); });
  define(A, 'randomItem', function () { return this[Math.floor(Math.random() * this.length)]; });
  define(A, 'smartJoin', function (keyField, valueField) {
    const out = {};
    for (const o of this) if (isPlainObject(o)) out[o[keyField]] = o[valueField];
    return out;
  });
  define(A, 'renameKeys', function (...pairs) {
    return this.map((o) => {
      if (!isPlainObject(o)) return o;
      const out = { ...o };
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        if (pairs[i] in out) { out[pairs[i + 1]] = out[pairs[i]]; delete out[pairs[i]]; }
      }
      return out;
    });
  });
  define(A, 'merge', function (...others) {
    const out = {};
    for (const o of [...this, ...others.flat()]) if (isPlainObject(o)) for (const k of Object.keys(o)) if (!(k in out)) out[k] = o[k];
    return out;
  });
  define(A, 'toJsonString', function () { return JSON.stringify(this); });

  // Object (non-enumerable, so JSON, for..in and Object.keys never see them)
  const O = Object.prototype;
  define(O, 'isEmpty', function () { return Object.keys(this).length === 0; });
  define(O, 'isNotEmpty', function () { return Object.keys(this).length > 0; });
  define(O, 'hasField', function (name) { return Object.prototype.hasOwnProperty.call(this, name); });
  define(O, 'removeField', function (name) { const out = { ...this }; delete out[name]; return out; });
  define(O, 'removeFieldsContaining', function (text) {
    const out = {};
    for (const [k, v] of Object.entries(this)) if (!(typeof v === 'string' && v.includes(text))) out[k] = v;
    return out;
  });
  define(O, 'keepFieldsContaining', function (text) {
    const out = {};
    for (const [k, v] of Object.entries(this)) if (typeof v === 'string' && v.includes(text)) out[k] = v;
    return out;
  });
  define(O, 'compact', function () {
    const out = {};
    for (const [k, v] of Object.entries(this)) if (!isEmptyValue(v)) out[k] = isPlainObject(v) ? v.compact() : v;
    return out;
  });
  define(O, 'keys', function () { return Object.keys(this); });
  define(O, 'values', function () { return Object.values(this); });
  define(O, 'toJsonString', function () { return JSON.stringify(this); });
  define(O, 'urlEncode', function () {
    return Object.entries(this).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  });
  define(O, 'merge', function (other) { return { ...(isPlainObject(other) ? other : {}), ...this }; });

  // Dates: JS Date and Luxon DateTime
  const UNITS = { year: 'years', years: 'years', month: 'months', months: 'months', week: 'weeks', weeks: 'weeks',
    day: 'days', days: 'days', hour: 'hours', hours: 'hours', minute: 'minutes', minutes: 'minutes',
    second: 'seconds', seconds: 'seconds', millisecond: 'milliseconds', milliseconds: 'milliseconds', ms: 'milliseconds',
    quarter: 'quarters', quarters: 'quarters' };
  const durationArg = (n, unit) => (typeof n === 'number' ? { [UNITS[unit || 'milliseconds'] || unit]: n } : n);
  const DT = DateTime.prototype;
  const luxonPlus = DT.plus;
  const luxonMinus = DT.minus;
  define(DT, 'plus', function (n, unit) { return luxonPlus.call(this, durationArg(n, unit)); });
  define(DT, 'minus', function (n, unit) { return luxonMinus.call(this, durationArg(n, unit)); });
  define(DT, 'format', function (fmt) { return this.toFormat(fmt); });
  define(DT, 'beginningOf', function (unit = 'week') { return this.startOf(unit); });
  define(DT, 'endOfMonth', function () { return this.endOf('month'); });
  define(DT, 'extract', function (part = 'week') {
    if (part === 'yearDayNumber') return this.ordinal;
    if (part === 'weekNumber' || part === 'week') return this.weekNumber;
    return this.get(part.replace(/s$/, ''));
  });
  define(DT, 'isWeekend', function () { return this.weekday >= 6; });
  define(DT, 'isBetween', function (a, b) {
    const x = toDateTime(a), y = toDateTime(b);
    const [lo, hi] = x <= y ? [x, y] : [y, x];
    return this > lo && this < hi;
  });
  define(DT, 'isInLast', function (n = 0, unit = 'minutes') { const now = DateTime.now(); return this >= now.minus(durationArg(n, unit)) && this <= now; });
  define(DT, 'diffTo', function (other, unit = 'days') {
    const res = this.diff(toDateTime(other), Array.isArray(unit) ? unit.map((u) => UNITS[u] || u) : UNITS[unit] || unit).toObject();
    return Array.isArray(unit) ? res : Object.values(res)[0];
  });
  define(DT, 'diffToNow', function (unit = 'days') { return DateTime.now().diffTo(this, unit); });
  define(DT, 'toDateTime', function () { return this; });
  define(DT, 'isEmpty', function () { return false; });
  define(DT, 'isNotEmpty', function () { return true; });
  const D = Date.prototype;
  for (const name of ['beginningOf', 'endOfMonth', 'extract', 'isWeekend', 'isBetween', 'isInLast', 'diffTo', 'diffToNow']) {
    define(D, name, function (...args) {
      const res = DT[name].apply(DateTime.fromJSDate(this), args);
      return DateTime.isDateTime(res) ? res.toJSDate() : res;
    });
  }
  define(D, 'format', function (fmt) { return DateTime.fromJSDate(this).toFormat(fmt); });
  define(D, 'plus', function (n, unit) { return DateTime.fromJSDate(this).plus(n, unit).toJSDate(); });
  define(D, 'minus', function (n, unit) { return DateTime.fromJSDate(this).minus(n, unit).toJSDate(); });
  define(D, 'toDateTime', function () { return DateTime.fromJSDate(this); });

  // ------------------------------------------------------------------ the $-globals

  const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

  function nodeInfo(data, name) {
    if (typeof name !== 'string' || name === '') throw new ExpressionError('When calling $(), please specify a node');
    const info = data.nodes && data.nodes[name];
    if (!info) {
      throw new ExpressionError(`Referenced node doesn't exist`, `The expression references the node '${name}', which is not in this workflow`);
    }
    return info;
  }

  function requireExecuted(name, info) {
    if (!info.isExecuted) {
      throw new ExpressionError(`Can't get data for expression: node '${name}' hasn't been executed`,
        `An expression references the node '${name}', but it hasn't been executed yet. Consider re-wiring your nodes or checking for execution first, i.e. {{ $if( $("${name}").isExecuted, <action_if_executed>, "") }}`);
    }
  }

  function runOutputs(name, info, runIndex) {
    requireExecuted(name, info);
    const last = (info.runs || 1) - 1;
    if (runIndex === undefined || runIndex === null || runIndex === -1 || runIndex === last) return info.outputs || [info.all || []];
    if (info.runOutputs && runIndex >= 0 && runIndex < info.runOutputs.length) return info.runOutputs[runIndex] || [];
    throw new ExpressionError(`Run ${runIndex} of node "${name}" not found`);
  }

  function nodeItems(name, info, outputIndex, runIndex) {
    const outputs = runOutputs(name, info, runIndex);
    const index = outputIndex === undefined || outputIndex === null ? 0 : outputIndex;
    if (index < 0 || index >= Math.max(outputs.length, 1)) {
      throw new ExpressionError(`The node "${name}" has no output with index ${index}`);
    }
    return outputs[index] || [];
  }

  function pairedItem(ctx, name, info, itemIndex) {
    const data = ctx.data;
    requireExecuted(name, info);
    if (itemIndex === undefined || itemIndex === data.itemIndex) {
      if (info.pairedError) throw new ExpressionError(info.pairedError);
      return info.item === null || info.item === undefined ? undefined : info.item;
    }
    if (Array.isArray(info.pairedItems)) {
      if (itemIndex < 0 || itemIndex >= info.pairedItems.length) throw noPair(name, data);
      const it = info.pairedItems[itemIndex];
      if (it === null || it === undefined) throw noPair(name, data);
      return it;
    }
    // Without the runtime's per-item pairing: follow the input item's pairedItem one step back
    // when the referenced node is the direct parent.
    const input = (data.input && data.input.all) || [];
    const inItem = input[itemIndex];
    if (!inItem) throw noPair(name, data);
    if (data.prevNode && data.prevNode.name === name) {
      let p = inItem.pairedItem;
      if (Array.isArray(p)) p = p[0];
      const idx = p === undefined || p === null ? itemIndex : typeof p === 'number' ? p : p.item || 0;
      const all = info.all || [];
      if (idx < all.length) return all[idx];
    }
    throw noPair(name, data);
  }

  function noPair(name, data) {
    const here = (data.node && data.node.name) || 'this node';
    return new ExpressionError('Can\u2019t get data for expression',
      `Some intermediate nodes between '${name}' and '${here}' have not executed yet, or the item has no matching item there.`);
  }

  function makeNodeRef(ctx, name) {
    const info = nodeInfo(ctx.data, name);
    const ref = {
      get isExecuted() { return !!info.isExecuted; },
      get params() { return info.params || {}; },
      get context() { return info.context || {}; },
      get runIndex() { return (info.runs || 1) - 1; },
      all(outputIndex, runIndex) { return nodeItems(name, info, outputIndex, runIndex); },
      first(outputIndex, runIndex) { return nodeItems(name, info, outputIndex, runIndex)[0]; },
      last(outputIndex, runIndex) { const a = nodeItems(name, info, outputIndex, runIndex); return a[a.length - 1]; },
      get item() { return pairedItem(ctx, name, info); },
      pairedItem(i) { return pairedItem(ctx, name, info, i); },
      itemMatching(i) {
        if (i === undefined) throw new ExpressionError('Missing item index for .itemMatching()');
        return pairedItem(ctx, name, info, i);
      },
    };
    return ref;
  }

  function makeLegacyNode(ctx, name, itemIndex) {
    const info = nodeInfo(ctx.data, name);
    const itemAt = () => {
      const items = nodeItems(name, info, 0);
      if (items.length === 0) throw new ExpressionError(`No data found from "main" input of node "${name}"`);
      const it = items[itemIndex] !== undefined ? items[itemIndex] : undefined;
      if (it === undefined) throw new ExpressionError(`No data found for item-index: "${itemIndex}"`, `Node "${name}" has only ${items.length} item(s)`);
      return it;
    };
    return {
      get json() { return itemAt().json; },
      get binary() { return itemAt().binary || {}; },
      get data() { return itemAt().json; },
      get parameter() { return info.params || {}; },
      get context() { return info.context || {}; },
      get runIndex() { return (info.runs || 1) - 1; },
      get isExecuted() { return !!info.isExecuted; },
    };
  }

  function makeNodeProxy(ctx, itemIndex) {
    return new Proxy({}, {
      get(target, prop) {
        if (typeof prop !== 'string') return undefined;
        return makeLegacyNode(ctx, prop, itemIndex);
      },
      has(target, prop) { return typeof prop === 'string' && !!(ctx.data.nodes && ctx.data.nodes[prop]); },
      ownKeys() { return Object.keys(ctx.data.nodes || {}); },
      getOwnPropertyDescriptor(target, prop) {
        return ctx.data.nodes && ctx.data.nodes[prop] ? { enumerable: true, configurable: true, value: makeLegacyNode(ctx, prop, itemIndex) } : undefined;
      },
    });
  }

  const ENV_DENIED = 'access to env vars denied';

  function envProxy() {
    const deny = () => { throw new ExpressionError(ENV_DENIED, 'Environment variables are not available to workflows on this Hive'); };
    return new Proxy({}, { get: deny, has: deny, ownKeys: deny, getOwnPropertyDescriptor: deny });
  }

  // Globals handed to every expression / code body as function parameters.
  const NAMES = ['$json', '$binary', '$input', '$', '$node', '$items', '$item', '$itemIndex', '$runIndex', '$prevNode',
    '$workflow', '$execution', '$now', '$today', '$parameter', '$position', '$vars', '$env', '$mode', '$data',
    '$thisItem', '$thisItemIndex', '$thisRunIndex', '$if', '$ifEmpty', '$min', '$max', '$not', '$evaluateExpression',
    'DateTime', 'Duration', 'Interval', 'items', 'item'];

  function buildScope(data, legacy) {
    const ctx = { data };
    const input = data.input || { all: [], item: null };
    const inputAll = input.all || [];
    const current = input.item === null || input.item === undefined ? undefined : input.item;
    const $input = {
      all(branchIndex) {
        if (branchIndex && data.inputs) return data.inputs[branchIndex] || [];
        return inputAll;
      },
      first() { return inputAll[0]; },
      last() { return inputAll[inputAll.length - 1]; },
      get item() { return current; },
      get params() { return (data.node && data.node.parameters) || {}; },
      get context() { return {}; },
    };
    const $ = (name) => makeNodeRef(ctx, name);
    const $items = (name, outputIndex, runIndex) => {
      if (name === undefined) return inputAll;
      const info = nodeInfo(data, name);
      return nodeItems(name, info, outputIndex, runIndex);
    };
    const itemIndex = data.itemIndex || 0;
    const runIndex = data.runIndex || 0;
    const $item = (i, r) => {
      const it = inputAll[i];
      return {
        $json: it ? it.json : undefined,
        $binary: it ? it.binary || {} : undefined,
        $node: makeNodeProxy(ctx, i),
        $itemIndex: i,
        $runIndex: r === undefined ? runIndex : r,
        $parameter: (data.node && data.node.parameters) || {},
      };
    };
    const now = DateTime.now();
    const scope = {
      $json: data.json || {},
      $binary: data.binary || {},
      $input,
      $,
      $node: makeNodeProxy(ctx, itemIndex),
      $items,
      $item,
      $itemIndex: itemIndex,
      $runIndex: runIndex,
      $prevNode: data.prevNode || {},
      $workflow: data.workflow || {},
      $execution: data.execution || {},
      $now: now,
      $today: now.startOf('day'),
      $parameter: (data.node && data.node.parameters) || {},
      $position: itemIndex,
      $vars: data.vars || {},
      $env: envProxy(),
      $mode: (data.execution && data.execution.mode) || 'manual',
      $data: data.json || {},
      $thisItem: current,
      $thisItemIndex: itemIndex,
      $thisRunIndex: runIndex,
      $if: (cond, a, b) => (cond ? a : b),
      $ifEmpty: (v, d) => (isEmptyValue(v) ? d : v),
      $min: (...a) => Math.min(...a),
      $max: (...a) => Math.max(...a),
      $not: (v) => !v,
      $evaluateExpression: () => { throw new ExpressionError('$evaluateExpression is not supported on this Hive'); },
      DateTime, Duration, Interval,
      items: legacy === 'items' ? inputAll : undefined,
      item: legacy === 'item' ? current : legacy === 'itemJson' ? (current ? current.json : {}) : undefined,
    };
    return NAMES.map((n) => scope[n]);
  }

  // ------------------------------------------------------------------ conversions

  function zoneISO(d) {
    if (Number.isNaN(d.getTime())) return 'Invalid Date';
    return DateTime.fromJSDate(d).toISO();
  }

  function toText(v) {
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    if (typeof v === 'function') throw new ExpressionError('this is a function, please add ()');
    if (typeof v === 'object') {
      if (v instanceof Date) return zoneISO(v);
      if (DateTime.isDateTime(v)) return v.isValid ? v.toISO() : 'Invalid DateTime';
      if (Duration.isDuration(v) || Interval.isInterval(v)) return v.toISO();
      return stringify(v);
    }
    if (typeof v === 'bigint') return v.toString();
    return String(v);
  }

  function replacer(k, v) { return typeof v === 'bigint' ? Number(v) : v; }

  function stringify(v) {
    try {
      return JSON.stringify(v);
    } catch (e) {
      if (e instanceof TypeError && /BigInt/.test(e.message)) return JSON.stringify(v, replacer);
      throw e;
    }
  }

  // ------------------------------------------------------------------ compile and run

  const compiled = new Map();
  let zone = null;

  function setZone(tz) {
    if (tz && tz !== zone) {
      Settings.defaultZone = tz;
      zone = tz;
    }
  }

  // An expression segment; returns [ok, value]. Plain JS errors make the value undefined (n8n's
  // tmpl swallows them); ExpressionErrors fail the evaluation.
  function compileSegment(code) {
    let body = code.trim();
    while (body.endsWith(';')) body = body.slice(0, -1).trimEnd();
    return new Function(...NAMES, `return (\n${body}\n);`);
  }

  function getCompiled(key, kind, sources) {
    let fn = compiled.get(key);
    if (!fn) {
      if (kind === 'expr') fn = sources.map((s) => (typeof s === 'string' ? s : compileSegment(s.code)));
      compiled.set(key, fn);
    }
    return fn;
  }

  function encodeError(e) {
    if (e && e.hiveExpressionError) return JSON.stringify({ error: { kind: 'expression', message: e.message, description: e.description } });
    const name = e && e.name ? e.name : 'Error';
    const message = e && e.message !== undefined ? String(e.message) : String(e);
    return JSON.stringify({ error: { kind: name === 'SyntaxError' ? 'syntax' : 'js', name, message } });
  }

  // parts: array of strings (text) and {code} objects. single: the whole value is one segment.
  function evaluate(key, parts, single, dataJson) {
    try {
      const data = JSON.parse(dataJson);
      setZone(data.timezone);
      const fns = getCompiled(key, 'expr', parts);
      const args = buildScope(data, null);
      const run = (fn) => {
        try {
          return fn.apply(undefined, args);
        } catch (e) {
          if (e && e.hiveExpressionError) throw e;
          return undefined;
        }
      };
      if (single) {
        const v = run(fns[0]);
        if (typeof v === 'function') {
          throw new ExpressionError(v === DateTime ? 'this is a DateTime, please access its methods' : 'this is a function, please add ()');
        }
        if (v instanceof Date && Number.isNaN(v.getTime())) return JSON.stringify({ value: null });
        if (DateTime.isDateTime(v) && !v.isValid) throw new ExpressionError('invalid DateTime', v.invalidExplanation);
        return stringify({ value: v });
      }
      let out = '';
      for (const f of fns) out += typeof f === 'string' ? f : toText(run(f));
      return JSON.stringify({ value: out });
    } catch (e) {
      return encodeError(e);
    }
  }

  function compileCode(key, code, isAsync) {
    let fn = compiled.get(key);
    if (!fn) {
      // The user's body becomes a function of the $-globals; "Code" names it in stack traces so a
      // thrown error's line can be reported relative to the user's code (body starts on line 2).
      // The body runs in a nested function so its own `const item` / `let items` shadow the
      // globals instead of clashing with them (n8n runs Code bodies in their own scope too).
      const src = `(function (${NAMES.join(', ')}) { return (${isAsync ? 'async ' : ''}function () {\n${code}\n})(); })\n//# sourceURL=Code`;
      fn = (0, eval)(src);
      compiled.set(key, fn);
    }
    return fn;
  }

  function lineOf(e) {
    const stack = e && typeof e.stack === 'string' ? e.stack : '';
    const m = stack.match(/\bCode:(\d+)(?::\d+)?/);
    return m ? Number(m[1]) - 1 : null;
  }

  function encodeCodeError(e) {
    if (e && e.hiveExpressionError) {
      return JSON.stringify({ error: { kind: 'expression', message: e.message, description: e.description, line: lineOf(e) } });
    }
    const isErr = e instanceof Error || (e && typeof e === 'object' && 'message' in e);
    const name = isErr && e.name ? String(e.name) : 'Error';
    let message = isErr ? String(e.message) : typeof e === 'string' ? e : stringify(e);
    if (message === undefined) message = String(e);
    return JSON.stringify({ error: { kind: 'code', name, message, line: isErr ? lineOf(e) : null } });
  }

  function finishCode(v) {
    if (typeof v === 'function') throw new TypeError('Code returned a function');
    return stringify({ value: v === undefined ? null : v, undefined: v === undefined });
  }

  // Returns a JSON string, or a Promise of one when the code is asynchronous.
  function runCode(key, code, isAsync, legacy, dataJson) {
    try {
      const data = JSON.parse(dataJson);
      setZone(data.timezone);
      const fn = compileCode(key, code, isAsync);
      const result = fn.apply(undefined, buildScope(data, legacy));
      if (result && typeof result.then === 'function') {
        return Promise.resolve(result).then((v) => {
          try { return finishCode(v); } catch (e) { return encodeCodeError(e); }
        }, (e) => encodeCodeError(e));
      }
      return finishCode(result);
    } catch (e) {
      return encodeCodeError(e);
    }
  }

  function checkSyntax(code) {
    try {
      compileSegment(code);
      return null;
    } catch (e) {
      return e && e.message ? String(e.message) : String(e);
    }
  }

  root.__hive = { evaluate, runCode, checkSyntax, ExpressionError };
})(globalThis);
