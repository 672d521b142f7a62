// Placeholder: replaced by the customers view.

export class CustomersView {
  constructor({ root }) {
    this.root = root;
  }

  load() {}

  clear() {
    this.root.replaceChildren();
  }

  render() {}
}
