'use strict';
// Which async context got which item, so that a bare taskDone() acks the
// item its own context got from get(), and never another context's.
//
// Each get() makes a frame; the frame is given to the async resources that
// react to get()'s promise (the caller's `await`, or its .then()) and, from
// them, to every resource made in that chain (what AsyncLocalStorage does).
// It is not entered in the context that called get(): an async function's
// synchronous part runs in its caller's resource, so a store entered there
// (AsyncLocalStorage's enterWith) would reach the caller and the siblings
// it starts next. A frame links to the frames still holding items in the
// context get() was called from, so a context that got an item and then
// another holds both.
const { createHook, executionAsyncResource } = require('async_hooks');

const FRAME = Symbol('asyncq.frame');
const byPromise = new Map(); // async id of a get() promise whose item is not done -> its frame
let creating = null; // the frame of the get() promise being made
let hook = null;

function init(asyncId, type, triggerAsyncId, resource) {
  if (creating !== null) {
    // The first resource made after creating is set: the get() promise.
    creating.promiseId = asyncId;
    byPromise.set(asyncId, creating);
    creating = null;
    return;
  }
  const got = byPromise.size ? byPromise.get(triggerAsyncId) : undefined;
  if (got !== undefined) {
    resource[FRAME] = got; // a reaction to a get() promise: its caller's chain
    return;
  }
  const current = executionAsyncResource();
  const frame = current && current[FRAME];
  if (frame !== undefined) resource[FRAME] = frame;
}

// The nearest frame from frame up that is not done.
function live(frame) {
  let found = frame;
  while (found && found.state === 'done') found = found.parent;
  return found || null;
}

class Frame {
  constructor(owner) {
    this.owner = owner; // the Consumer whose get() made it
    this.state = 'waiting'; // then 'held' (item got), 'done'
    this.item = null;
    this.promiseId = -1;
    // The frames still held or waiting in the calling context; done ones are
    // skipped as links are made, so a chain is as long as what it holds.
    this.parent = live(currentFrame());
    for (let f = this.parent; f; f = f.parent) f.parent = live(f.parent);
  }

  hold(item) {
    this.state = 'held';
    this.item = item;
  }

  done() {
    this.state = 'done';
    this.item = null;
    byPromise.delete(this.promiseId);
  }
}

function currentFrame() {
  if (!hook) return null;
  const resource = executionAsyncResource();
  return (resource && resource[FRAME]) || null;
}

// A promise whose reactions carry frame: { promise, resolve, reject }.
function tracked(frame) {
  if (!hook) {
    hook = createHook({ init });
    hook.enable();
  }
  const settle = {};
  creating = frame;
  try {
    settle.promise = new Promise((resolve, reject) => {
      settle.resolve = resolve;
      settle.reject = reject;
    });
  } finally {
    creating = null;
  }
  return settle;
}

// The frames of owner holding an item in the calling async context.
function heldHere(owner) {
  const held = [];
  for (let f = currentFrame(); f; f = f.parent) {
    if (f.owner === owner && f.state === 'held') held.push(f);
  }
  return held;
}

module.exports = { Frame, tracked, heldHere };
