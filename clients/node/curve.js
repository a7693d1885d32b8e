'use strict';
// CURVE keys for the client's sockets (PROTOCOL.md 7), read from czmq
// certificates as `asyncq keygen` writes them. Their format is ZPL
// (rfc.zeromq.org/spec/4): `name = "value"` lines, indented four spaces per
// level under section names, and `#` comments.
const fs = require('fs');

const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;
const ZPL_LINE = /^([A-Za-z0-9][A-Za-z0-9$\-_@.&+/]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s#]*)))?\s*(?:#.*)?$/;

// Every value of a ZPL text by its path: { 'curve/public-key': '...' }.
function parseZpl(text, file) {
  const values = {};
  const path = [];
  text.split(/\r?\n/).forEach((line, index) => {
    const body = line.trimStart();
    if (!body || body.startsWith('#')) return;
    const depth = (line.length - body.length) / 4;
    const m = ZPL_LINE.exec(body.trimEnd());
    if (!m || !Number.isInteger(depth) || depth > path.length) {
      throw new Error(`${file}, line ${index + 1}: not a certificate line: ${line}`);
    }
    path.length = depth;
    path.push(m[1]);
    const value = m[2] ?? m[3] ?? m[4];
    if (value !== undefined) values[path.join('/')] = value;
  });
  return values;
}

function readZpl(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the certificate ${file}: ${error.message}`);
  }
  return parseZpl(text, file);
}

// This client's key pair, from its secret certificate (NAME.key_secret).
function readSecretCertificate(file) {
  const values = readZpl(file);
  const publicKey = values['curve/public-key'];
  const secretKey = values['curve/secret-key'];
  if (!Z85_KEY.test(publicKey || '') || !Z85_KEY.test(secretKey || '')) {
    throw new Error(`${file} is not a secret certificate (asyncq keygen writes NAME.key_secret)`);
  }
  return { publicKey, secretKey };
}

// The broker's public key: 40 characters of Z85, or its certificate file.
function readServerKey(value) {
  if (Z85_KEY.test(value)) return value;
  const key = readZpl(value)['curve/public-key'];
  if (!Z85_KEY.test(key || '')) throw new Error(`${value} is neither the broker's public certificate nor a key`);
  return key;
}

// zeromq.js socket options for CURVE from options.curveSecret and
// options.serverKey, else ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY; null if
// neither is set (no CURVE).
function curveOptions(options = {}, env = process.env) {
  const secret = options.curveSecret || env.ASYNCQ_CURVE_SECRET;
  const server = options.serverKey || env.ASYNCQ_SERVER_KEY;
  if (!secret && !server) return null;
  if (!secret) {
    throw new Error("the broker's key is given but not this client's certificate (curveSecret, ASYNCQ_CURVE_SECRET)");
  }
  if (!server) {
    throw new Error("this client's certificate is given but not the broker's key (serverKey, ASYNCQ_SERVER_KEY)");
  }
  const { publicKey, secretKey } = readSecretCertificate(secret);
  return { curveServerKey: readServerKey(server), curvePublicKey: publicKey, curveSecretKey: secretKey };
}

module.exports = { parseZpl, curveOptions };
