// Placeholder: replaced by the admin view.

export class AdminView {
  constructor({ root }) {
    this.root = root;
  }

  load() {}

  clear() {
    this.root.replaceChildren();
  }

  render() {}
}
