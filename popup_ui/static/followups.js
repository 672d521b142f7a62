// Placeholder: replaced by the followups view.

export class FollowupsView {
  constructor({ root }) {
    this.root = root;
  }

  load() {}

  clear() {
    this.root.replaceChildren();
  }

  render() {}
  count() {}
}
