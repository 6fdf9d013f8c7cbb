// Sort a layer page's map grid by map number, max activation, fire rate or class selectivity.
// A classic script (not a module), so it also runs from file://.
(function () {
  "use strict";
  var grid = document.getElementById("maps");
  if (!grid) { return; }
  var buttons = document.querySelectorAll("[data-sort]");
  function sortBy(key) {
    var items = Array.prototype.slice.call(grid.children);
    items.sort(function (a, b) {
      if (key === "map") { return Number(a.dataset.map) - Number(b.dataset.map); }
      var difference = Number(b.dataset[key]) - Number(a.dataset[key]);
      return difference || Number(a.dataset.map) - Number(b.dataset.map);
    });
    items.forEach(function (item) { grid.appendChild(item); });
    buttons.forEach(function (button) {
      button.classList.toggle("active", button.dataset.sort === key);
    });
  }
  buttons.forEach(function (button) {
    button.addEventListener("click", function () { sortBy(button.dataset.sort); });
  });
}());
